"""Every command README.md shows, run as shown against a fresh data directory with
`trialflow serve --demo` running beside it, on SQLite and on PostgreSQL.

The commands are read from the README itself (lines of ```sh blocks and inline `trialflow …`
spans), so a command added there is run here. Lines with placeholders (`[--wait]`, `42`, `…`)
are mapped to concrete forms in CONCRETE; a few are not run, each with its reason in NOT_RUN.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BINARY = Path(os.environ.get("TRIALFLOW_BIN", ROOT / "target" / "debug" / "trialflow"))
POSTGRES = os.environ.get("TRIALFLOW_TEST_POSTGRES", "postgres://postgres@127.0.0.1:5432/postgres")

# README lines with placeholders → the concrete commands this test runs for them.
# `{run}` is the id of the latest run a command printed; `{port}` the server's port.
CONCRETE = {
    "trialflow trigger example_mapped --conf '{\"items\": [\"a\", \"b\"]}' [--wait]": [
        "trialflow trigger example_mapped --conf '{\"items\": [\"a\", \"b\"]}'",
        "trialflow trigger example_mapped --conf '{\"items\": [\"a\", \"b\"]}' --wait",
    ],
    "trialflow runs [--pipeline ID] [--state failed]": [
        "trialflow runs",
        "trialflow runs --pipeline example_mapped --state failed",
    ],
    "trialflow run 42": ["trialflow run {run}"],
    "trialflow healthcheck [--url URL]": [
        "trialflow healthcheck",
        "trialflow healthcheck --url http://127.0.0.1:{port}/healthz",
    ],
    "trialflow connections list|describe|rotate-key|reencrypt": [
        "trialflow connections list",
        "trialflow connections describe imednet_default",
        "trialflow connections rotate-key",
        "trialflow connections reencrypt",
    ],
    "trialflow bench imednet [--records N]": ["trialflow bench imednet --records 2000"],
    # The README's path is relative to the default data directory; here it is a fresh one.
    "trialflow verify-export data/exports/reference/run-1": [
        'trialflow verify-export "$(ls -d "$TRIALFLOW_DATA_DIR"/exports/reference/run-* | head -n 1)"'
    ],
    # The benchmarks' default sizes take minutes; small sizes prove the commands work.
    "trialflow bench console": ["trialflow bench console --instances 200 --renders 3"],
    "trialflow bench export": [
        "trialflow bench export --sizes 2000 --formats csv,parquet --sdk-records 0"
    ],
}

NOT_RUN = {
    "./scripts/run.sh": "builds the binary under test and execs `serve --demo`, which this test runs",
    "./scripts/run.sh --release": "the optimised build; CI builds debug once (timed in README)",
    "./scripts/run.sh --addr 0.0.0.0:8080": "run.sh passes its flags to `serve`, as this test does",
    "./scripts/test.sh": "the test command itself",
    "./scripts/proof.sh kill --long": "scripts/test.sh runs its short form (`scripts/proof.sh kill`) before this test",
    "./scripts/proof.sh db --long": "scripts/test.sh runs its short form (`scripts/proof.sh db`); the long one restarts the machine's PostgreSQL",
    "TRIALFLOW_FUZZ_CASES=100000 cargo test -p tests --test api hostile_input": "cargo test runs the same properties with 256 cases before this test",
    "trialflow serve": "the server this test starts beside every command",
}

# Long-running commands: started, checked for their first line, then stopped.
SERVERS = ("trialflow simulate",)
# Commands for another kind of host: checked where that host exists.
CONTAINER_PREFIX = "docker "


def readme_commands() -> list[str]:
    text = README.read_text()
    commands: list[str] = []
    for block in re.findall(r"```sh\n(.*?)```", text, flags=re.S):
        for line in block.splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                commands.append(line)
    prose = re.sub(r"```.*?```", "", text, flags=re.S)
    for span in re.findall(r"`((?:\./scripts/[^`]+|(?:target/\w+/)?trialflow [^`]+))`", prose):
        commands.append(span.strip())
    seen: dict[str, None] = {}
    for c in commands:
        seen.setdefault(c, None)
    return list(seen)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Beside:
    """A fresh data directory (and database) with `serve --demo` running on it."""

    def __init__(self, backend: str, tmp: Path):
        self.backend = backend
        self.data = tmp / "data"
        self.port = free_port()
        self.env = dict(os.environ)
        self.env.update(
            TRIALFLOW_DATA_DIR=str(self.data),
            TRIALFLOW_ADDR=f"127.0.0.1:{self.port}",
            PW="readme-password-1",
            RUST_LOG="warn",
            PATH=f"{BINARY.parent}:{os.environ['PATH']}",
        )
        self.env.pop("DATABASE_URL", None)
        self.database = None
        if backend == "postgres":
            self.database = f"readme_{os.getpid()}_{self.port}"
            psql(POSTGRES, f"CREATE DATABASE {self.database}")
            self.env["DATABASE_URL"] = POSTGRES.rsplit("/", 1)[0] + "/" + self.database
        self.log = open(tmp / "serve.log", "w")
        self.server = subprocess.Popen(
            ["trialflow", "serve", "--demo"], env=self.env, cwd=ROOT, stdout=self.log, stderr=self.log
        )
        self.extra: list[subprocess.Popen] = []
        self.wait_healthy()
        self.last_run: str | None = None

    def wait_healthy(self):
        deadline = time.time() + 60
        while time.time() < deadline:
            assert self.server.poll() is None, f"serve exited: {Path(self.log.name).read_text()}"
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                time.sleep(0.2)
        raise AssertionError("serve --demo did not answer /healthz within 60 s")

    def run(self, command: str, timeout: float = 300) -> str:
        command = command.replace("{run}", self.last_run or "1").replace("{port}", str(self.port))
        out = subprocess.run(
            ["bash", "-c", command],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert out.returncode == 0, f"`{command}` exited {out.returncode}:\n{out.stdout}\n{out.stderr}"
        found = re.findall(r"^Run (\d+) of", out.stdout, flags=re.M)
        if found:
            self.last_run = found[-1]
        return out.stdout

    def start_long_running(self, command: str, first_line: str) -> None:
        proc = subprocess.Popen(
            ["bash", "-c", f"exec {command}"], env=self.env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )
        self.extra.append(proc)
        line = proc.stdout.readline()
        assert line.startswith(first_line), f"`{command}` printed {line!r}, expected {first_line!r}…"

    def close(self):
        for proc in [*self.extra, self.server]:
            proc.terminate()
        for proc in [*self.extra, self.server]:
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
        self.log.close()
        if self.database:
            psql(POSTGRES, f"DROP DATABASE IF EXISTS {self.database} WITH (FORCE)")


def psql(url: str, sql: str) -> None:
    subprocess.run(["psql", url, "-qtAc", sql], check=True, capture_output=True)


def check_output(beside: Beside, command: str, out: str) -> None:
    """What each kind of command must have done, beyond exiting 0."""
    if "trigger" in command and "--wait" in command:
        assert re.search(r"^Run \d+ ended: success\.$", out, flags=re.M), out
    if command.startswith("trialflow trigger imednet_multi_study_reference") or command.startswith(
        "target/debug/trialflow trigger imednet_multi_study_reference"
    ):
        files = re.findall(r"^  (\S+) \((\d+) rows, (\d+) bytes, sha256 ([0-9a-f]{64})\)$", out, flags=re.M)
        assert len(files) == 3, out
        for path, _rows, size, _sha in files:
            assert Path(path).stat().st_size == int(size)
    if "flows run nightly_exports" in command:
        bucket = beside.data / "demo-s3" / "demo-exports"
        manifests = list(bucket.rglob("manifest.json"))
        assert manifests, f"no manifest.json under {bucket}"
        manifest = json.loads(manifests[-1].read_text())
        assert manifest, manifest
    if command.startswith("trialflow verify-export"):
        assert re.search(r"^All \d+ files match the manifest\.$", out, flags=re.M), out
    if command.startswith("trialflow bench"):
        assert json.loads(out), out
    if command == "trialflow user list":
        assert {"admin", "alice", "bob"} <= {line.split()[0] for line in out.splitlines() if line}, out
    if command.startswith("trialflow connections list"):
        assert "imednet_default" in out and "aws_default" in out, out
        assert "demo-api-key" not in out and "demo-secret-key" not in out, out
    if command.startswith("trialflow connections describe"):
        described = json.loads(out)
        assert described["api_key"] == "***", described


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_every_readme_command_works_as_shown(backend, tmp_path):
    commands = readme_commands()
    assert len(commands) > 20, commands
    beside = Beside(backend, tmp_path)
    ran: list[str] = []
    try:
        for command in commands:
            if command in NOT_RUN:
                continue
            if command.startswith(CONTAINER_PREFIX):
                continue  # test_container_files.py covers these
            if command.startswith(SERVERS):
                beside.start_long_running(command, "LISTENING ")
                ran.append(command)
                continue
            if command.startswith("DATABASE_URL=postgres://… trialflow worker"):
                if backend == "postgres":
                    beside.start_long_running(command.replace("DATABASE_URL=postgres://… ", ""), "worker ")
                    # Only a worker advertising `gpu` may run this; the server's workers do not.
                    beside.run(
                        "trialflow flows run summarize_exports --labels gpu --wait --poll-interval 1 "
                        "--params '{\"exports\": [{\"path\": \"a.csv\", \"rows\": 3}]}'",
                        timeout=120,
                    )
                    ran.append(command)
                continue
            if backend == "postgres" and command.startswith("trialflow bench"):
                continue  # benchmarks make their own databases; once (on SQLite) is enough
            for concrete in CONCRETE.get(command, [command]):
                out = beside.run(concrete)
                check_output(beside, concrete, out)
                ran.append(concrete)
    finally:
        beside.close()
    print(f"{backend}: ran {len(ran)} README commands")
    # The ones CI must never silently lose:
    for must in ("trialflow healthcheck", "flows run nightly_exports", "trigger imednet_multi_study_reference --wait"):
        assert any(must in c for c in ran), (must, ran)


def test_the_readme_mapping_names_only_commands_the_readme_shows():
    shown = set(readme_commands())
    stale = [c for c in [*CONCRETE, *NOT_RUN] if c not in shown]
    assert not stale, f"mapped here but not in README.md any more: {stale}"


def test_the_binary_exists():
    assert BINARY.exists() and shutil.which(str(BINARY)), f"build {BINARY} first (scripts/test.sh does)"
