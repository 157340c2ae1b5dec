"""Runnable examples.

- :mod:`adamupdate.examples.train_digits` — MATLAB's "Train Network Using adamupdate": a small
  CNN trained on handwritten digits with a custom loop that calls :func:`adamupdate.adamupdate`.
  Run it with ``adamupdate demo`` or ``python -m adamupdate demo``.

Importing this package imports nothing heavy; the example modules import PyTorch themselves.
"""
