"""The arrows of docs/architecture.md: which of our modules each layer may import."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests import pyast

SRC = Path(__file__).resolve().parent.parent / "src" / "aiosfu"

# layer -> the only aiosfu modules (and their submodules) it may import
ALLOWED = {
    "contract.py": (),
    "room": ("aiosfu.contract", "aiosfu.room"),
    "record": ("aiosfu.contract", "aiosfu.log", "aiosfu.record"),
    "sfu": ("aiosfu.contract", "aiosfu.log", "aiosfu.sfu", "aiosfu.record"),
}


def imported(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(pyast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return {name for name in names if name == "aiosfu" or name.startswith("aiosfu.")}


def allowed(name: str, layer: str) -> bool:
    return any(name == ok or name.startswith(ok + ".") for ok in ALLOWED[layer])


@pytest.mark.parametrize("layer", sorted(ALLOWED))
def test_layer_imports_only_what_the_arrows_allow(layer: str) -> None:
    where = SRC / layer
    files = [where] if where.is_file() else sorted(where.rglob("*.py"))
    assert files
    wrong = [
        f"{path.relative_to(SRC)} imports {name}"
        for path in files
        for name in sorted(imported(path))
        if not allowed(name, layer)
    ]
    assert not wrong, "\n".join(wrong)
