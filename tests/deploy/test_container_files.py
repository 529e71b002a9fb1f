"""The container path (Dockerfile, compose.yaml) checked without a container runtime.

These machines have a Docker client but no daemon and no registry, so no image can be built
here. Instead the files are parsed and held to what the README promises; where Docker Compose
exists, `docker compose config -q` checks compose.yaml too.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
BINARY = Path(os.environ.get("TRIALFLOW_BIN", ROOT / "target" / "debug" / "trialflow"))


def stages() -> list[list[dict]]:
    """The Dockerfile's instructions grouped by build stage."""
    parser = DockerfileParser(path=str(ROOT / "Dockerfile"))
    grouped: list[list[dict]] = []
    for instruction in parser.structure:
        if instruction["instruction"] == "FROM":
            grouped.append([])
        if grouped:
            grouped[-1].append(instruction)
    return grouped


def values(stage: list[dict], name: str) -> list[str]:
    return [i["value"] for i in stage if i["instruction"] == name]


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def documented_env_vars() -> set[str]:
    """Every environment variable the binary's `serve` and `worker` read (from their --help)."""
    names: set[str] = set()
    for command in (["serve", "--help"], ["worker", "--help"]):
        out = subprocess.run([BINARY, *command], capture_output=True, text=True, check=True).stdout
        names |= set(re.findall(r"\[env: ([A-Z_]+)", out))
    return names


def test_the_image_is_built_in_one_stage_and_run_from_a_slim_one():
    build, final = stages()[0], stages()[-1]
    assert len(stages()) == 2
    assert values(build, "FROM")[0].startswith("rust:") and "AS build" in values(build, "FROM")[0]
    run = " ".join(values(build, "RUN"))
    assert "build_site --release" in run and "ensure_rust_tools" in run and "ensure_wasm_opt" in run
    assert values(final, "FROM")[0].endswith("-slim")
    copies = values(final, "COPY")
    assert any(c.startswith("--from=build") and c.endswith("/app/trialflow") for c in copies), copies
    assert any(c.startswith("--from=build") and c.endswith("/app/site") for c in copies), copies


def test_the_builder_uses_the_toolchain_the_project_is_tested_with():
    image = values(stages()[0], "FROM")[0].split()[0]
    version = re.search(r"rust:(\d+\.\d+)", image).group(1)
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True, check=True).stdout
    assert rustc.startswith(f"rustc {version}."), (image, rustc)


def test_the_final_image_runs_as_a_non_root_user_with_data_as_a_volume():
    final = stages()[-1]
    users = values(final, "USER")
    assert users and users[-1] not in ("root", "0"), users
    run = " ".join(values(final, "RUN"))
    assert f"useradd" in run and "--uid 10001" in run and f"chown {users[-1]}" in run
    assert values(final, "VOLUME") == ["/data"]
    env = " ".join(values(final, "ENV"))
    assert "TRIALFLOW_DATA_DIR=/data" in env
    assert "TRIALFLOW_ADDR=0.0.0.0:3000" in env
    assert values(final, "EXPOSE") == ["3000"]
    assert values(final, "ENTRYPOINT") == ['["trialflow"]']


def test_the_image_healthcheck_asks_the_server():
    health = values(stages()[-1], "HEALTHCHECK")
    assert len(health) == 1 and 'CMD ["trialflow", "healthcheck"]' in health[0], health
    out = subprocess.run([BINARY, "healthcheck", "--help"], capture_output=True, text=True, check=True)
    assert "TRIALFLOW_ADDR" in out.stdout


def test_every_environment_variable_the_container_files_set_is_one_trialflow_reads():
    known = documented_env_vars()
    dockerfile_env = re.findall(r"\b(TRIALFLOW_[A-Z_]+|DATABASE_URL)=", (ROOT / "Dockerfile").read_text())
    compose_env = [
        name
        for service in compose()["services"].values()
        for name in (service.get("environment") or {})
        if name.startswith("TRIALFLOW_") or name == "DATABASE_URL"
    ]
    assert dockerfile_env and compose_env
    unknown = sorted(set(dockerfile_env + compose_env) - known)
    assert not unknown, f"not read by trialflow serve/worker: {unknown}"


def test_compose_starts_postgres_one_server_and_two_workers_with_health_dependencies():
    services = compose()["services"]
    assert set(services) == {"postgres", "serve", "worker-1", "worker-2"}
    postgres = services["postgres"]
    assert postgres["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])
    pg_env = postgres["environment"]
    expected_url = (
        f"postgres://{pg_env['POSTGRES_USER']}:{pg_env['POSTGRES_PASSWORD']}@postgres:5432/{pg_env['POSTGRES_DB']}"
    )

    serve = services["serve"]
    assert serve["command"] == ["serve", "--demo"]
    assert serve["healthcheck"]["test"] == ["CMD", "trialflow", "healthcheck"]
    assert serve["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert "3000:3000" in serve["ports"]
    assert serve["environment"]["TRIALFLOW_DEMO_URL"] == "http://serve:3000"

    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["command"] == ["worker"], name
        assert worker["depends_on"]["postgres"]["condition"] == "service_healthy"
        assert worker["depends_on"]["serve"]["condition"] == "service_healthy"
        # Workers serve no HTTP: the image's healthcheck would always fail for them.
        assert worker["healthcheck"] == {"disable": True}

    for name in ("serve", "worker-1", "worker-2"):
        service = services[name]
        assert service["build"] == "."
        assert service["environment"]["DATABASE_URL"] == expected_url, name
        # One data volume for all: the secrets key file must be the same everywhere.
        assert "trialflow-data:/data" in service["volumes"], name
    assert {"trialflow-data", "postgres-data"} <= set(compose()["volumes"])


def test_the_commands_compose_runs_are_real_trialflow_commands():
    for service in ("serve", "worker-1"):
        command = compose()["services"][service]["command"]
        out = subprocess.run([BINARY, *command[:1], "--help"], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        for flag in command[1:]:
            assert flag in out.stdout, (service, flag)


def test_the_build_context_leaves_out_build_output_and_local_state():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {"target", "data", ".git", ".venv", ".tools"} <= ignored


def test_docker_compose_accepts_the_file_where_compose_exists():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no Docker Compose on this machine (the checks above cover compose.yaml)")
    subprocess.run([docker, "compose", "-f", str(ROOT / "compose.yaml"), "config", "-q"], check=True)
