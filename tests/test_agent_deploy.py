"""deploy/: the Dockerfile, compose file and Kubernetes manifests, validated and consistent.

Schemas from PyPI packages (``kubernetes-validate`` for Kubernetes, check-jsonschema's
vendored compose-spec for compose), and the settings checked against each other: the
side port, the drain budget, the agent as the main process.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    found = BIN / name
    if found.exists():
        return str(found)
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed")
    return path


def _validate_k8s(*files: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [_tool("kubernetes-validate"), "--strict", *map(str, files)],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _manifests() -> dict[str, dict[str, Any]]:
    found = {}
    for path in sorted((DEPLOY / "k8s").glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            found[document["kind"]] = document
    return found


def _env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def test_the_kubernetes_manifests_pass_the_schema_strictly():
    done = _validate_k8s(*sorted((DEPLOY / "k8s").glob("*.yaml")))
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_validator_would_catch_a_broken_manifest(tmp_path):
    broken = (DEPLOY / "k8s" / "deployment.yaml").read_text()
    broken = broken.replace("terminationGracePeriodSeconds: 30", "terminationGracePeriod: 30")
    (tmp_path / "broken.yaml").write_text(broken)
    done = _validate_k8s(tmp_path / "broken.yaml")
    assert done.returncode != 0 and "terminationGracePeriod" in done.stdout + done.stderr


def test_the_compose_file_passes_the_compose_spec():
    done = subprocess.run(
        [
            _tool("check-jsonschema"),
            "--builtin-schema",
            "vendor.compose-spec",
            str(DEPLOY / "compose.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_probes_ask_the_agent_and_the_grace_covers_the_drain():
    manifests = _manifests()
    pod = manifests["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = _env(container)
    assert container["command"][:2] == ["lifesigns", "run"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports["lifesigns"] == int(env["LIFESIGNS_SIDE_PORT"])
    assert env["LIFESIGNS_SIDE_HOST"] == "0.0.0.0"  # the kubelet connects to the pod IP
    assert container["livenessProbe"]["httpGet"] == {"path": "/livez", "port": "lifesigns"}
    assert container["readinessProbe"]["httpGet"]["port"] == "lifesigns"
    drain = float(env["LIFESIGNS_DRAIN_DELAY"]) + float(env["LIFESIGNS_GRACE"])
    assert pod["terminationGracePeriodSeconds"] >= drain
    assert float(env["LIFESIGNS_TERMINATION_GRACE"]) == pod["terminationGracePeriodSeconds"]
    # The side port is on no Service.
    service_ports = manifests["Service"]["spec"]["ports"]
    assert all(p["targetPort"] != "lifesigns" for p in service_ports)
    assert all(p.get("port") != ports["lifesigns"] for p in service_ports)
    # The token comes from a Secret, never a literal.
    token = next(e for e in container["env"] if e["name"] == "LIFESIGNS_TOKEN")
    assert "secretKeyRef" in token["valueFrom"]


def test_docker_and_compose_agree_with_the_settings():
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    cmd = re.search(r"^CMD (\[.*\])$", dockerfile, re.MULTILINE)
    assert cmd and yaml.safe_load(cmd.group(1))[:3] == ["lifesigns", "run", "--"]
    env = dict(re.findall(r"(LIFESIGNS_[A-Z_]+)=(\S+)", dockerfile))
    assert f"127.0.0.1:{env['LIFESIGNS_SIDE_PORT']}/livez" in dockerfile
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())["services"]["app"]
    assert f":{compose['environment']['LIFESIGNS_SIDE_PORT']}/livez" in " ".join(
        compose["healthcheck"]["test"]
    )
    grace = int(compose["stop_grace_period"].removesuffix("s"))
    drain = float(compose["environment"]["LIFESIGNS_DRAIN_DELAY"]) + float(
        compose["environment"]["LIFESIGNS_GRACE"]
    )
    assert grace >= drain
    published = " ".join(compose["ports"])
    assert env["LIFESIGNS_SIDE_PORT"] not in published  # the side port stays inside
