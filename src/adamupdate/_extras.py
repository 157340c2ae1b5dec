"""Optional dependencies: imported when a call needs them, with the extra that installs them."""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, extra: str, purpose: str) -> ModuleType:
    """Import ``module`` or raise an ``ImportError`` that says which extra installs it.

    The extra is quoted, so the command also works in zsh, where ``[...]`` is a glob.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        raise ImportError(
            f"{purpose} need{'s' if not purpose.endswith('s') else ''} {module.split('.')[0]}: "
            f"pip install 'adamupdate[{extra}]'"
        ) from error
