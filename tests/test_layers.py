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


# Inside the media plane: producers and consumers meet only through the Router's
# protocols (sfu/router.py), and the Router needs neither class.
APART = {
    "sfu/producer.py": ("aiosfu.sfu.consumer",),
    "sfu/consumer.py": ("aiosfu.sfu.producer",),
    "sfu/router.py": ("aiosfu.sfu.producer", "aiosfu.sfu.consumer", "aiosfu.sfu.aiortc_hooks"),
    "sfu/packet_io.py": (
        "aiosfu.sfu.aiortc_hooks",
        "aiosfu.sfu.producer",
        "aiosfu.sfu.consumer",
        "aiosfu.sfu.router",
    ),
}


@pytest.mark.parametrize("module", sorted(APART))
def test_media_plane_pieces_do_not_import_each_other(module: str) -> None:
    names = imported(SRC / module)
    wrong = [name for name in sorted(names) if imports_one_of(name, APART[module])]
    assert not wrong, f"{module} imports {', '.join(wrong)}"


def imports_one_of(name: str, modules: tuple[str, ...]) -> bool:
    return any(name == m or name.startswith(m + ".") for m in modules)


def test_packet_io_knows_nothing_of_aiortc() -> None:
    """The packet boundary speaks clear packets; wiring it to aiortc is aiortc_hooks' job."""
    tree = pyast.parse((SRC / "sfu" / "packet_io.py").read_text())
    modules = {
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
    } | {node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not {m for m in modules if m.split(".")[0] in ("aiortc", "aioice")}
