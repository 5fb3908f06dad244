"""`ast.parse` that CPython 3.11.7 cannot fail spuriously.

Its AST constructor checks that the recursion depth is the same before and after
building a tree; a garbage collection that runs a finalizer in between (an unclosed
aiohttp session or a pending task left by an earlier test) moves the depth and makes
`ast.parse` raise "SystemError: AST constructor recursion depth mismatch". Parsing with
the collector off keeps finalizers out of that window.
"""

from __future__ import annotations

import ast
import gc


def parse(source: str) -> ast.Module:
    gc.disable()
    try:
        return ast.parse(source)
    finally:
        gc.enable()
