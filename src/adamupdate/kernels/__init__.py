"""Compiled kernels: the fused memory walk of an update rule (numba, the ``fast`` extra)."""
