"""The first release's name for :mod:`adamupdate.network` (kept so that old code runs)."""

from .network import *  # noqa: F403
from .network import __all__, update_network  # noqa: F401
