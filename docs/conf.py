"""Sphinx configuration: ``make docs`` builds the HTML (warnings are errors) and runs the pages'
examples with the doctest builder.

Docstrings are written in numpydoc style and their ``>>>`` examples are run by pytest
(``--doctest-modules``); the doctest builder runs only the examples written in these pages
(``.. testcode::`` and ``.. doctest::`` blocks).
"""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # document this checkout, not an installed copy

import adamupdate  # noqa: E402

project = "adamupdate"
author = "the adamupdate maintainers"
copyright = "the adamupdate maintainers (MIT licence)"
release = version = adamupdate.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.doctest",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "numpydoc",
]

root_doc = "index"
exclude_patterns = ["_build"]
html_theme = "furo"
html_title = f"adamupdate {version}"
html_static_path: list[str] = []
pygments_style = "sphinx"

# --- API reference: numpydoc sections from the docstrings -------------------------------------
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = False  # values, not private constant names
numpydoc_show_class_members = False  # members are listed by the autodoc directives themselves
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False

# Every cross-reference must resolve (warnings are errors), except to libraries whose own
# documentation is not linked (no intersphinx: the build needs no network) and to private
# modules, which docstrings name for readers of the source.
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(torch|numpy|np|jax|jnp|optax|pandas|rich|matplotlib|scipy)(\..*)?"),
    (r"py:.*", r"(io|os|pathlib|typing)(\..*)?"),
    (r"py:.*", r"collections\.abc\..*"),
    (r"py:.*", r"adamupdate(\.\w+)*\._\w+.*|adamupdate\.rules(\..*)?"),
    (r"py:class", r"T|Any|Callable|Iterable|Mapping|TextIO|Point|PathLike|optional|default.*"),
]

# --- examples in the pages: the doctest builder ------------------------------------------------
doctest_test_doctest_blocks = ""  # plain >>> blocks are docstrings, which pytest runs
doctest_global_setup = """
import numpy as np
np.set_printoptions(precision=8, suppress=False)
"""
