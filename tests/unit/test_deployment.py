"""The deployment files, which cannot run here (no Docker engine): their structure, that they agree with
the code (settings, health endpoints), and HAProxy's own syntax check where HAProxy is installed."""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import yaml

from app.config import Settings
from app.routers import health

ROOT = Path(__file__).resolve().parents[2]
INSTANCES = ("realtime-1", "realtime-2")
# Read by uvicorn rather than by app.config.
UVICORN_VARIABLES = {"FORWARDED_ALLOW_IPS"}


def _compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())
    return loaded


def _haproxy_sections() -> dict[str, list[str]]:
    """`section name` → its directives, comments dropped."""
    sections: dict[str, list[str]] = {}
    current: list[str] = []
    for raw in (ROOT / "deploy" / "haproxy.cfg").read_text().splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        if not line[0].isspace():
            current = sections.setdefault(line.strip(), [])
        else:
            current.append(line.strip())
    return sections


def test_compose_runs_postgres_with_logical_wal_redis_two_instances_and_a_balancer() -> None:
    services = _compose()["services"]
    assert set(services) == {"postgres", "redis", *INSTANCES, "lb"}
    assert "wal_level=logical" in services["postgres"]["command"]
    assert services["redis"]["image"].startswith("redis:")
    settings = {name.upper() for name in Settings.model_fields}
    for name in INSTANCES:
        instance = services[name]
        assert instance["build"] == "."
        environment = instance["environment"]
        assert "@postgres:5432/" in environment["DATABASE_URL"]
        assert environment["REALTIME_REDIS_URL"].startswith("redis://redis:")
        assert set(environment) <= settings | UVICORN_VARIABLES, "a variable the service does not read"
        assert instance["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert "ports" not in instance  # reached through the balancer only
    lb = services["lb"]
    assert lb["image"].startswith("haproxy:")
    assert "./deploy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in lb["volumes"]
    assert lb["ports"] == ["8080:8080"]


def test_the_balancer_has_no_sticky_sessions_and_routes_by_readiness() -> None:
    sections = _haproxy_sections()
    backend = sections["backend instances"]
    text = "\n".join(line for lines in sections.values() for line in lines)
    # Nothing ties a client to an instance: no cookie, no stick table, no hashing on the source.
    assert not re.search(r"^(cookie|stick|stick-table|hash-type)\b", text, re.M)
    balance = [line.split()[1] for line in backend if line.startswith("balance")]
    assert balance and balance[0] in ("leastconn", "roundrobin")
    servers = [line.split()[1:3] for line in backend if line.startswith("server ")]
    assert servers == [[name, f"{name}:8080"] for name in INSTANCES]
    assert "option httpchk GET /readyz" in backend
    assert any(line.startswith("timeout tunnel") for line in sections["defaults"])  # WebSockets last
    paths = {getattr(route, "path", None) for route in health.router.routes}
    assert "/readyz" in paths


def test_haproxy_accepts_the_configuration_where_it_is_installed() -> None:
    haproxy = shutil.which("haproxy")
    if haproxy is None:
        return  # the structure is checked above; CI installs HAProxy (.ci/run) to check the syntax too
    result = subprocess.run(
        [haproxy, "-c", "-f", str(ROOT / "deploy" / "haproxy.cfg")],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "Configuration file is valid" in output
    # Outside compose the instances' names do not resolve; nothing else may warn.
    warnings = [line for line in output.splitlines() if "[WARNING]" in line]
    assert all("could not resolve address" in line for line in warnings), output


def test_the_image_runs_as_a_user_with_a_health_check_on_a_real_endpoint() -> None:
    lines = (ROOT / "Dockerfile").read_text().replace("\\\n", " ").splitlines()
    instructions = [line.split(None, 1) for line in lines if line.strip() and not line.startswith("#")]
    users = [rest[0].strip() for keyword, *rest in instructions if keyword == "USER"]
    assert users and users[-1] not in ("root", "0"), "the image must not run as root"
    healthchecks = [rest[0] for keyword, *rest in instructions if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    command = ast.literal_eval(healthchecks[0].split("CMD", 1)[1].strip())
    assert command[:2] == ["python", "-c"]
    compile(command[2], "HEALTHCHECK", "exec")  # the probe is valid Python
    paths = {getattr(route, "path", None) for route in health.router.routes}
    probed = re.findall(r"/[a-z]+", command[2].split("127.0.0.1", 1)[1])
    assert probed and probed[0] in paths
    assert instructions[-1] == ["CMD", '["fluxbase-realtime", "serve"]']
