"""Backends: one thin adapter module per array library, all with the same interface.

Each backend module exposes

``NAME``
    The library's name, used in messages and in grouping.
``describe(x) -> (device, dtype, shape)``
    What grouping and structure checks need to know about one leaf.
``check_param_dtype(dtype) -> str | None``
    ``None`` when ``dtype`` can be updated, else the reason it cannot.
``state_dtypes(param_dtype, state_dtype, like) -> (avg_grad_dtype, avg_sq_grad_dtype)``
    States keep the gradient's dtype (``state_dtype`` overrides it); the squared average of a
    complex gradient is real.
``is_writeable(x) -> bool``
    Whether ``inplace=True`` can write into ``x``.
``zero_state(dtype, like)``
    MATLAB's scalar 0 state (0-d) for a frozen parameter.
``step(params, grads, avg_grads, avg_sq_grads, c, *, inplace, state_dtypes)``
    One Adam step for a *group* of leaves sharing backend, device and dtype: flat lists in,
    flat lists out. ``avg_grads``/``avg_sq_grads`` are ``None`` for a group on its first
    iteration. Must agree with :func:`adamupdate._algorithm.reference_step`.
``finish(original, updated)``
    Give a new parameter the outer form of the one it replaces (scalars, ``requires_grad``).
``finish_state(grad, updated)``
    Give a state the outer form of its gradient (a Python float for a Python float).
"""
