"""The JS SDK as an npm package: its TypeScript declarations type-check an application
(tsc from the committed lock file), cover every export and every public Client method
of the module itself, and `npm pack` ships exactly the module, its declarations and its
README under the project's version."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

from aiosfu import __version__
from tests.conftest import ROOT

WEB = ROOT / "src" / "aiosfu" / "web"
TSC = ROOT / "node_modules" / ".bin" / "tsc"
TSC_FLAGS = [
    "--noEmit", "--strict", "--target", "es2022", "--module", "es2022",
    "--moduleResolution", "bundler", "--lib", "es2022,dom", "--skipLibCheck", "false",
]  # fmt: skip


def tsc(*files: Path) -> subprocess.CompletedProcess[str]:
    if not TSC.exists():
        pytest.fail("typescript is in package.json's devDependencies: make install")
    return subprocess.run(
        [str(TSC), *TSC_FLAGS, *map(str, files)], capture_output=True, text=True, cwd=ROOT
    )


def test_an_application_type_checks_against_the_declarations(tmp_path: Path) -> None:
    result = tsc(ROOT / "tests" / "js" / "sdk_usage.ts")
    assert result.returncode == 0, result.stdout + result.stderr

    wrong = tmp_path / "wrong.ts"
    wrong.write_text(
        f'import {{ Client }} from "{WEB / "aiosfu.js"}";\n'
        "const client = new Client({ reconnectDelay: 'soon' });\n"
        "client.publish(42, null);\n"
        "client.on('reconnected', (e) => e.rooms.push(1));\n"
    )
    result = tsc(wrong)
    assert result.returncode != 0
    assert result.stdout.count("error TS") == 3, result.stdout


def module_surface() -> dict[str, list[str]]:
    """What aiosfu.js exports, and Client's public methods, read by Node from the module."""
    script = (
        f"const m = await import({json.dumps(str(WEB / 'aiosfu.js'))});"
        "const methods = Object.getOwnPropertyNames(m.Client.prototype)"
        "  .filter((n) => n !== 'constructor' && !n.startsWith('_'));"
        "console.log(JSON.stringify({exports: Object.keys(m), methods}));"
    )
    result = subprocess.run(
        ["node", "--input-type=module", "-e", script], capture_output=True, text=True, check=True
    )
    surface: dict[str, list[str]] = json.loads(result.stdout)
    return surface


def test_the_declarations_cover_the_module() -> None:
    declarations = (WEB / "aiosfu.d.ts").read_text()
    surface = module_surface()
    assert {"Client", "Mesh", "RoomChannel", "SignalError"} <= set(surface["exports"])
    for name in surface["exports"]:
        assert re.search(rf"^export (class|function|const) {name}\b", declarations, re.M), name
    client = declarations[declarations.index("export class Client") :]
    client = client[: client.index("\n}\n")]
    for method in surface["methods"]:
        assert re.search(rf"^  {method}\(", client, re.M), f"Client.{method} is not declared"


def test_npm_pack_ships_the_module_and_its_declarations() -> None:
    manifest = json.loads((WEB / "package.json").read_text())
    assert manifest["version"] == __version__
    assert manifest["exports"]["."] == {"types": "./aiosfu.d.ts", "default": "./aiosfu.js"}
    assert "private" not in manifest
    result = subprocess.run(
        ["npm", "pack", "--dry-run", "--json", "--ignore-scripts"],
        capture_output=True, text=True, cwd=WEB, check=True,
    )  # fmt: skip
    packed = json.loads(result.stdout)[0]
    assert packed["name"] == "aiosfu-client"
    assert {f["path"] for f in packed["files"]} == {
        "aiosfu.js", "aiosfu.d.ts", "README.md", "package.json",
    }  # fmt: skip
