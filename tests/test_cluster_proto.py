"""The generated gRPC modules import under the pinned protobuf, and match sfu.proto."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "src" / "aiosfu" / "cluster" / "proto"
GENERATED = ["sfu_pb2.py", "sfu_pb2.pyi", "sfu_pb2_grpc.py"]


@pytest.mark.parametrize("module", ["sfu_pb2", "sfu_pb2_grpc"])
def test_every_generated_module_imports(module: str) -> None:
    imported = importlib.import_module(f"aiosfu.cluster.proto.{module}")
    assert imported.__file__ is not None


def test_the_service_has_every_contract_method() -> None:
    from aiosfu.cluster.proto import sfu_pb2

    service = sfu_pb2.DESCRIPTOR.services_by_name["Sfu"]
    assert set(service.methods_by_name) == {
        "Publish", "Unpublish", "Subscribe", "Unsubscribe", "ClosePeer", "Pause",
        "StartRecording", "StopRecording", "Stats", "Events",
    }  # fmt: skip
    assert service.methods_by_name["Events"].server_streaming


def test_generated_modules_are_current(tmp_path: Path) -> None:
    """Fails after an edit of sfu.proto until `make proto` is run and its output committed."""
    out = tmp_path / "out"
    (out / "aiosfu" / "cluster" / "proto").mkdir(parents=True)
    subprocess.run(
        [
            sys.executable, "-m", "grpc_tools.protoc", f"-I{ROOT / 'src'}",
            f"--python_out={out}", f"--grpc_python_out={out}", f"--pyi_out={out}",
            str(PROTO_DIR / "sfu.proto"),
        ],
        check=True,
    )  # fmt: skip
    for name in GENERATED:
        fresh = (out / "aiosfu" / "cluster" / "proto" / name).read_text()
        assert fresh == (PROTO_DIR / name).read_text(), f"{name} is stale: run make proto"
