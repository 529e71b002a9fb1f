"""Shared fixtures: one iMednet simulator (`trialflow simulate`) for the whole session."""
from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def port():
    if os.environ.get("SIM_PORT"):
        yield int(os.environ["SIM_PORT"])
        return
    binary = os.environ.get("TRIALFLOW_BIN", str(ROOT / "target" / "debug" / "trialflow"))
    proc = subprocess.Popen(
        [binary, "simulate", "--port", "0", "--profile", "demo", "--job-ms", "800"],
        stdout=subprocess.PIPE,
        text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("LISTENING"), line
    yield int(line.split()[1])
    proc.terminate()
    proc.wait(timeout=10)
