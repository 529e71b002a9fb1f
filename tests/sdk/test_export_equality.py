"""Our exports equal the real SDK's: for each demo study, trialflow's writers (through
`trialflow bench export-worker`, the same code path as the `imednet.export` operator) and the
SDK 0.5.0 export helpers run against the same simulator; compare_sdk.py compares them cell by
cell. Deliberate differences (documented in ARCHITECTURE.md) are counted separately; any other
difference fails the test."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
import compare_sdk  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
BINARY = os.environ.get("TRIALFLOW_BIN", str(ROOT / "target" / "debug" / "trialflow"))
STUDIES = ["CV 3/B", "DEMO", "ONC-202"]


def export_ours(base: str, study: str, out: Path, options: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for fmt, name in compare_sdk.FILES.items():
        subprocess.run(
            [BINARY, "bench", "export-worker", "--base-url", base, "--study", study,
             "--format", fmt, "--output", str(out / name), "--options", json.dumps(options)],
            check=True, capture_output=True,
        )


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("labels", [False, True], ids=["names", "labels"])
def test_exports_equal_the_sdk(port, study, labels, tmp_path):
    base = f"http://127.0.0.1:{port}"
    kwargs = {"use_labels_as_columns": True} if labels else {}
    # The SDK never skips deleted records; ours does unless asked.
    export_ours(base, study, tmp_path / "ours", {"include_deleted": True, **kwargs})
    compare_sdk.cmd_sdk(base, study, tmp_path / "sdk", kwargs=kwargs)
    results = compare_sdk.compare_dirs(tmp_path / "ours", tmp_path / "sdk")
    unexpected = {f: r for f, r in results.items() if r["status"] in ("different", "missing_ours")}
    assert not unexpected, json.dumps(unexpected, indent=2)
    # CSV, JSON, Excel and the long table are always compared, never skipped.
    for fmt in ("csv", "json", "xlsx", "long_sqlite", "sqlite"):
        assert results[fmt]["status"].startswith("equal"), (fmt, results[fmt])
    if study == "CV 3/B":
        # The one study whose numeric answers are all filled: the SDK's parquet works here.
        assert results["parquet"]["status"].startswith("equal"), results["parquet"]
    else:
        # SDK defect: "" beside numbers in a NUMBER column makes pyarrow refuse the frame.
        assert results["parquet"]["status"] == "sdk_failed", results["parquet"]


def test_a_real_difference_is_caught(port, tmp_path):
    """The comparison is not vacuous: a tampered export is reported."""
    base = f"http://127.0.0.1:{port}"
    export_ours(base, "ONC-202", tmp_path / "ours", {"include_deleted": True})
    compare_sdk.cmd_sdk(base, "ONC-202", tmp_path / "sdk", kwargs={})
    csv_path = tmp_path / "ours" / "export.csv"
    lines = csv_path.read_text().splitlines(keepends=True)
    lines[1] = lines[1].replace(",", ",X", 1)
    csv_path.write_text("".join(lines))
    results = compare_sdk.compare_dirs(tmp_path / "ours", tmp_path / "sdk")
    assert results["csv"]["status"] == "different"
