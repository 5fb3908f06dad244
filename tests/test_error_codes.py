"""Every errorCode the server can send is an `ErrorCode` member and documented.

The codes a server module can send are the `ErrorCode` members it names; the first test
makes sure no raise site or response bypasses the enum with a bare string.
"""

from __future__ import annotations

import ast
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import aiosfu
from aiosfu.contract import CodedError, ErrorCode
from aiosfu.signal import protocol
from tests import pyast

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "src" / "aiosfu"
# The client SDK receives codes from a server; it sends none.
SERVER_FILES = sorted(p for p in SRC.rglob("*.py") if "client" not in p.relative_to(SRC).parts)


def coded_error_classes() -> set[str]:
    for module in pkgutil.walk_packages(aiosfu.__path__, "aiosfu."):
        if not module.name.endswith("__main__"):  # it runs the command line
            importlib.import_module(module.name)
    names, todo = set(), [CodedError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def code_argument(call: ast.Call, name: str) -> ast.expr | None:
    """The expression a call passes as its error code (positionally or as `code=`)."""
    position = 1 if name == "response_error" else 0
    for keyword in call.keywords:
        if keyword.arg == "code":
            return keyword.value
    return call.args[position] if len(call.args) > position else None


def called_name(call: ast.Call) -> str:
    func = call.func
    return func.id if isinstance(func, ast.Name) else getattr(func, "attr", "")


def named_members(tree: ast.AST) -> set[str]:
    return {
        node.attr
        for node in ast.walk(tree)
        if isinstance(node, ast.Attribute)
        and isinstance(node.value, ast.Name)
        and node.value.id == "ErrorCode"
    }


def documented_codes() -> set[str]:
    text = (ROOT / "docs" / "protocol.md").read_text()
    section = text.split("\n## Error codes\n", 1)[1].split("\n## ", 1)[0]
    # Hyphenated names anywhere in the section; one-word codes as a table's first column.
    hyphenated = re.findall(r"`([a-z0-9]+(?:-[a-z0-9]+)+)`", section)
    in_table = re.findall(r"^\| `([a-z0-9-]+)` \|", section, re.MULTILINE)
    return {*hyphenated, *in_table}


def test_codes_are_sent_only_as_enum_members() -> None:
    senders = coded_error_classes() | {"response_error"}
    bare = []
    for path in SERVER_FILES:
        for node in ast.walk(pyast.parse(path.read_text())):
            if isinstance(node, ast.Call) and called_name(node) in senders:
                code = code_argument(node, called_name(node))
                if isinstance(code, ast.Constant):
                    bare.append(f"{path.relative_to(ROOT)}:{node.lineno}: {code.value!r}")
    assert not bare, "error codes given as strings instead of ErrorCode members:\n" + "\n".join(
        bare
    )


def test_every_code_the_server_sends_is_documented() -> None:
    sent: set[str] = set()
    for path in SERVER_FILES:
        if path.name != "contract.py":
            sent |= named_members(pyast.parse(path.read_text()))
    unknown = sent - set(ErrorCode.__members__)
    assert not unknown, f"not ErrorCode members: {sorted(unknown)}"
    values = {ErrorCode[name].value for name in sent}
    assert values, "no module sends an ErrorCode: the scan is broken"
    undocumented = values - documented_codes()
    assert not undocumented, f"missing from docs/protocol.md: {sorted(undocumented)}"


def test_every_member_is_sent_and_documented() -> None:
    sent: set[str] = set()
    for path in SERVER_FILES:
        if path.name != "contract.py":
            sent |= named_members(pyast.parse(path.read_text()))
    unsent = set(ErrorCode.__members__) - sent
    assert not unsent, f"codes no module sends: {sorted(unsent)}"
    stray = documented_codes() - {code.value for code in ErrorCode}
    assert not stray, f"documented in docs/protocol.md but not ErrorCode members: {sorted(stray)}"


def test_a_code_outside_the_enum_is_refused_where_it_is_raised() -> None:
    with pytest.raises(ValueError):
        CodedError("no-such-code", "why")  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        protocol.response_error(1, "no-such-code", "why")  # type: ignore[arg-type]
    error = CodedError("not-owner", "because")  # type: ignore[arg-type]
    assert error.code is ErrorCode.NOT_OWNER
    wire = protocol.response_error(1, error.code, error.reason)
    assert type(wire["errorCode"]) is str
    assert wire["errorCode"] == "not-owner"
