"""The standard library's docstrings as pydoc renders them, one page per module, without Django (the
corpus import and kimi-mini's trace generator build the very same pages).

pydoc prints default values with their repr, which for functions holds a memory address
(`<function _read at 0x7f8a8524b920>`) that differs in every process; it is cut, so a page's text is the
same wherever and whenever it is built."""

from __future__ import annotations

import contextlib
import io
import re
import sys

URL = "https://docs.python.org/3/library/{}.html"
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+>")


def module_names() -> list[str]:
    return sorted(n for n in sys.stdlib_module_names if not n.startswith("_"))


def render(name: str) -> str:
    """The module's pydoc page as plain text; raises what importing the module raises."""
    import pydoc

    with contextlib.redirect_stdout(io.StringIO()):  # `this` prints on import
        text = pydoc.render_doc(name, renderer=pydoc.plaintext)
    return _ADDRESS.sub(">", text)
