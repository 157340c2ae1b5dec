"""Adam's math — now :mod:`adamupdate.rules.adam`; this name stays for code that imports it."""

from .rules.adam import *  # noqa: F403
from .rules.adam import (  # noqa: F401
    Hyperparameters,
    StepCoefficients,
    bias_corrected_step_size,
    coefficients,
    reference_step,
    squared_magnitude,
    torch_equivalent_epsilon,
    update_moment,
)
