"""The first release's name for :mod:`adamupdate.network`: importing it still works, with a
``DeprecationWarning``; it will be removed in a later release."""

import warnings

from .network import *  # noqa: F403
from .network import __all__, update_network  # noqa: F401

warnings.warn(
    "adamupdate.nn is deprecated: import adamupdate.network (or the names from adamupdate)",
    DeprecationWarning,
    stacklevel=2,
)
