"""Shared parts of test_matlab_reference.py and test_matlab_containers.py: ulps, and the dtypes
MATLAB's ``adamupdate`` gives the averages.
"""

from __future__ import annotations

import numpy as np


def ulp(x) -> np.ndarray:
    return np.spacing(np.abs(np.asarray(x, dtype=np.float64)))


def real_dtype(dtype) -> np.dtype:
    return np.finfo(np.dtype(dtype)).dtype


def average_dtype(dtype) -> np.dtype:
    """Half-precision parameters keep float32 averages (MATLAB has no half type to follow)."""
    return np.dtype(np.float32) if np.dtype(dtype) == np.float16 else np.dtype(dtype)
