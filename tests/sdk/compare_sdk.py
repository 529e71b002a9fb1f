#!/usr/bin/env python3
"""Compare trialflow's study exports with the iMednet Python SDK 0.5.0's export helpers.

Subcommands (the bare form `compare_sdk.py OUR_DIR SDK_DIR` means `compare`):

  fetch   --base-url URL --study KEY --out DIR
          Dump the study's raw API JSON (variables.json, forms.json, records.json) from a
          running simulator; this is what our writers are fed.
  sdk     (--base-url URL --study KEY | --dump DUMP_DIR) --out DIR
          Run the SDK's export_to_csv/json/parquet/excel/sql/sql_by_form/long_sql against the
          same server, or (--dump) against a stand-in client serving a `fetch` dump through
          the SDK's own models (no server needed). Failures are recorded in DIR/errors.json.
  compare OUR_DIR SDK_DIR
          Compare file by file. Differences we made on purpose (see NOTES.md) are counted per
          category; anything else is "unexpected" and makes the exit status 1.
  run     [--binary PATH] [--export-cmd CMD] [--study KEY ...] [--work DIR]
          All of the above against `trialflow simulate --port 0 --profile demo`:
          fetch → CMD DUMP_DIR OUR_DIR OPTIONS → sdk → compare, where OPTIONS is
          {"include_deleted": true} plus --sdk-kwargs (also passed to the SDK).

File names in both directories: export.csv, export.json, export.parquet, export.xlsx,
export.sqlite (table `records`), export_by_form.sqlite, export_long.sqlite (table `records`).
Needs pandas, pyarrow, openpyxl, SQLAlchemy and imednet==0.5.0 (only for `sdk`/`run`).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shlex
import sqlite3
import subprocess
import sys
import urllib.parse
import urllib.request
from collections import Counter
from pathlib import Path

API_KEY = os.environ.get("IMEDNET_API_KEY", "demo-api-key")
SECURITY_KEY = os.environ.get("IMEDNET_SECURITY_KEY", "demo-security-key")
SENTINEL_DATE = "1969-04-20T16:20:00"  # the SDK's stand-in for an empty timestamp
FILES = {
    "csv": "export.csv",
    "json": "export.json",
    "parquet": "export.parquet",
    "xlsx": "export.xlsx",
    "sqlite": "export.sqlite",
    "sqlite_by_form": "export_by_form.sqlite",
    "long_sqlite": "export_long.sqlite",
}

# --- fetch ---------------------------------------------------------------------------------


def _get_all(base_url: str, study: str, resource: str) -> list:
    items, page = [], 0
    quoted = urllib.parse.quote(study, safe="")
    while True:
        url = f"{base_url.rstrip('/')}/api/v1/edc/studies/{quoted}/{resource}?page={page}&size=500"
        req = urllib.request.Request(
            url,
            headers={
                "x-api-key": API_KEY,
                "x-imn-security-key": SECURITY_KEY,
                "Accept": "application/json",
            },
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            body = json.load(resp)
        items.extend(body.get("data") or [])
        total = (body.get("pagination") or {}).get("totalPages") or 1
        if page >= total - 1:
            return items
        page += 1


def cmd_fetch(base_url: str, study: str, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for resource in ("variables", "forms", "records"):
        data = _get_all(base_url, study, resource)
        (out / f"{resource}.json").write_text(json.dumps(data))
    print(f"fetched {study} into {out}")


# --- SDK exports ---------------------------------------------------------------------------


class _DumpList:
    """`sdk.<resource>.list()` over dumped JSON, honouring the list filters the export
    helpers send (`formIds`, `formId`, `variableNames`) the way the simulator does."""

    def __init__(self, items: list, model):
        self.items, self.model = items, model

    def list(self, study_key=None, record_data_filter=None, **filters):
        out = []
        for item in self.items:
            if "formIds" in filters and item.get("formId") not in filters["formIds"]:
                continue
            if "formId" in filters and item.get("formId") != filters["formId"]:
                continue
            names = filters.get("variableNames")
            if names is not None:
                if "variableName" in item and item["variableName"] not in names:
                    continue
                if "recordData" in item:
                    data = item.get("recordData") or {}
                    if not any(n in data for n in names):
                        continue
                    item = {**item, "recordData": {k: v for k, v in data.items() if k in names}}
            out.append(self.model.from_json(item))
        return out


class _DumpSDK:
    def __init__(self, dump: Path):
        from imednet.models.forms import Form
        from imednet.models.records import Record
        from imednet.models.variables import Variable

        load = lambda name: json.loads((dump / f"{name}.json").read_text())  # noqa: E731
        self.variables = _DumpList(load("variables"), Variable)
        self.forms = _DumpList(load("forms"), Form)
        self.records = _DumpList(load("records"), Record)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def cmd_sdk(
    base_url: str | None, study: str, out: Path, dump: Path | None = None, kwargs: dict | None = None
) -> None:
    from imednet import ImednetSDK
    from imednet.integrations import export

    out.mkdir(parents=True, exist_ok=True)
    errors = {}
    client = (
        _DumpSDK(dump)
        if dump is not None
        else ImednetSDK(api_key=API_KEY, security_key=SECURITY_KEY, base_url=base_url)
    )
    kwargs = dict(kwargs or {})
    # Only export_to_sql/_by_form take the whitelists; the file exports take the labels flag.
    file_kw = {k: v for k, v in kwargs.items() if k == "use_labels_as_columns"}
    with client as sdk:
        jobs = {
            "csv": lambda p: export.export_to_csv(sdk, study, p, **file_kw),
            "json": lambda p: export.export_to_json(sdk, study, p, **file_kw),
            "parquet": lambda p: export.export_to_parquet(sdk, study, p, **file_kw),
            "xlsx": lambda p: export.export_to_excel(sdk, study, p, **file_kw),
            "sqlite": lambda p: export.export_to_sql(
                sdk, study, "records", f"sqlite:///{p}", **kwargs
            ),
            "sqlite_by_form": lambda p: export.export_to_sql_by_form(
                sdk, study, f"sqlite:///{p}", **kwargs
            ),
            "long_sqlite": lambda p: export.export_to_long_sql(
                sdk, study, "records", f"sqlite:///{p}"
            ),
        }
        for fmt, job in jobs.items():
            path = out / FILES[fmt]
            if path.exists():
                path.unlink()
            try:
                job(str(path))
            except Exception as exc:  # recorded: some SDK exports fail by design
                errors[fmt] = f"{type(exc).__module__}.{type(exc).__name__}: {exc}"
                # A per-form export that died part-way keeps the tables it wrote: compared.
                if path.exists() and fmt != "sqlite_by_form":
                    path.unlink()
    (out / "errors.json").write_text(json.dumps(errors, indent=2))
    (out / "kwargs.json").write_text(json.dumps(kwargs))
    print(f"SDK exports of {study} in {out}; failures: {sorted(errors) or 'none'}")


# --- comparison ----------------------------------------------------------------------------


def _num(v):
    """float for numbers and numeric strings (not bools), else None."""
    if isinstance(v, bool) or v is None:
        return None
    if isinstance(v, (int, float)):
        return float(v)
    if isinstance(v, str):
        try:
            f = float(v)
        except ValueError:
            return None
        return f if math.isfinite(f) else None
    return None


def _is_null(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


class Report:
    def __init__(self, fmt: str):
        self.fmt = fmt
        self.known: Counter = Counter()
        self.unexpected: list = []
        self.notes: list = []
        self.status = "equal"

    def diff(self, where: str, ours, sdk) -> None:
        self.unexpected.append(f"{where}: ours={ours!r} sdk={sdk!r}")

    def cell(self, where: str, ours, sdk, *, typed: str | None = None) -> None:
        """Compare one value; `typed` is our column type for SQLite (FLOAT/BOOLEAN/...)."""
        if _is_null(ours) and _is_null(sdk):
            return
        if type(ours) is type(sdk) and ours == sdk:
            return
        if isinstance(ours, str) and isinstance(sdk, str) and ours == sdk:
            return
        if isinstance(ours, bool) or isinstance(sdk, bool):
            if ours == sdk:
                return
        if _is_null(ours) and sdk == SENTINEL_DATE:
            self.known["missing dateCreated: ours null, SDK sentinel 1969-04-20T16:20:00"] += 1
            return
        on, sn = _num(ours), _num(sdk)
        if on is not None and sn is not None and on == sn:
            if isinstance(ours, str) and isinstance(sdk, str):
                self.known["numeric text: ours keeps the JSON number, pandas float64 adds .0"] += 1
            elif isinstance(sdk, str):
                self.known["number: ours numeric, SDK text (pandas object column → TEXT)"] += 1
            else:
                self.known["number type: int vs float of the same value (pandas inference)"] += 1
            return
        if typed in ("FLOAT", "BOOLEAN") and _is_null(ours) and sdk == "":
            self.known["blank answer in typed column: ours NULL, SDK '' in a TEXT column"] += 1
            return
        if typed == "BOOLEAN" and on is not None and sn is not None and bool(on) == bool(sn):
            return
        self.diff(where, ours, sdk)

    def finish(self) -> dict:
        if self.unexpected:
            self.status = "different"
        elif self.status == "equal" and self.known:
            self.status = "equal_with_known_differences"
        return {
            "status": self.status,
            "known": dict(self.known),
            "notes": self.notes,
            "unexpected_count": len(self.unexpected),
            "unexpected": self.unexpected[:25],
        }


def _renamed_extras(ours_cols: list, sdk_cols: list):
    """Our columns that the SDK dropped as case-insensitive duplicates (we keep them as
    `<name>_N`), or None when the column lists differ in any other way."""
    lower_sdk = [str(c).lower() for c in sdk_cols]
    extras, k = [], 0
    for j, col in enumerate(ours_cols):
        if k < len(sdk_cols) and col == sdk_cols[k]:
            k += 1
            continue
        base, _, n = str(col).rpartition("_")
        if not (n.isdigit() and int(n) >= 2):
            return None
        seen = [c.lower() for c in ours_cols[:j]]
        if base.lower() not in seen and base.lower() not in lower_sdk:
            return None
        extras.append(j)
    return extras if k == len(sdk_cols) else None


def _compare_tables(rep: Report, name: str, ours_cols, sdk_cols, ours_rows, sdk_rows, types=None):
    ours_cols, sdk_cols = list(ours_cols), list(sdk_cols)
    keep = list(range(len(ours_cols)))
    if ours_cols != sdk_cols:
        extras = _renamed_extras(ours_cols, sdk_cols)
        if extras is None:
            rep.diff(f"{name} columns", ours_cols, sdk_cols)
            return
        rep.known["duplicate column names: SDK drops the column, ours keeps it as <name>_N"] += len(
            extras
        )
        rep.notes.append(f"{name}: SDK dropped {[ours_cols[j] for j in extras]}")
        keep = [j for j in keep if j not in extras]
    if len(ours_rows) != len(sdk_rows):
        rep.diff(f"{name} row count", len(ours_rows), len(sdk_rows))
        return
    for i, (a, b) in enumerate(zip(ours_rows, sdk_rows)):
        for k, j in enumerate(keep):
            typed = types[j] if types else None
            rep.cell(f"{name} row {i} `{ours_cols[j]}`", a[j], b[k], typed=typed)


def compare_csv(ours: Path, sdk: Path) -> Report:
    rep = Report("csv")
    with ours.open(newline="") as f:
        a = list(csv.reader(f))
    with sdk.open(newline="") as f:
        b = list(csv.reader(f))
    _compare_tables(rep, "csv", a[0], b[0], a[1:], b[1:])
    for i, (ra, rb) in enumerate(zip(a[1:], b[1:])):
        for j, (x, y) in enumerate(zip(ra, rb)):
            if x.startswith("'") != y.startswith("'"):
                rep.diff(f"csv row {i} col {j}: formula guard", x, y)
    guarded = sum(1 for r in a[1:] for x in r if x.startswith("'"))
    rep.notes.append(f"{len(a) - 1} rows, {len(a[0])} columns, {guarded} guarded cells")
    return rep


def compare_json(ours: Path, sdk: Path) -> Report:
    rep = Report("json")
    a = json.loads(ours.read_text())
    b = json.loads(sdk.read_text())
    rep.known["layout: ours array of row objects, SDK pandas orient='columns'"] += 1
    a_cols = list(a[0].keys()) if a else []
    b_cols = list(b.keys())
    n = len(next(iter(b.values()))) if b else 0
    b_rows = [[b[c][str(i)] for c in b_cols] for i in range(n)]
    a_rows = [[r[c] for c in a_cols] for r in a]
    _compare_tables(rep, "json", a_cols, b_cols, a_rows, b_rows)
    return rep


def compare_parquet(ours: Path, sdk: Path, sdk_error: str | None) -> Report:
    import pyarrow.parquet as pq

    rep = Report("parquet")
    ta = pq.read_table(ours)
    rep.notes.append(
        f"ours: {ta.num_rows} rows, types {sorted(Counter(str(t) for t in ta.schema.types).items())}"
    )
    if sdk_error:
        rep.status = "sdk_failed"
        rep.notes.append(f"SDK: {sdk_error}")
        return rep
    tb = pq.read_table(sdk)
    for fa, fb in zip(ta.schema, tb.schema):
        if fa.name == fb.name and str(fa.type) != str(fb.type):
            # pandas gives int64 for integer-only columns, bool for all-null object columns, ...
            rep.known[f"column type {fa.type} vs SDK {fb.type} (pandas inference)"] += 1
    _compare_tables(
        rep,
        "parquet",
        ta.column_names,
        tb.column_names,
        [list(r.values()) for r in ta.to_pylist()],
        [list(r.values()) for r in tb.to_pylist()],
    )
    return rep


def compare_xlsx(ours: Path, sdk: Path) -> Report:
    import openpyxl

    rep = Report("xlsx")
    wa = openpyxl.load_workbook(ours, read_only=True).active
    wb = openpyxl.load_workbook(sdk, read_only=True).active
    a = [list(r) for r in wa.iter_rows(values_only=True)]
    b = [list(r) for r in wb.iter_rows(values_only=True)]
    # Trailing empty cells are not stored by either writer: pad rows to each header's width.
    a = [r + [None] * (len(a[0]) - len(r)) for r in a]
    b = [r + [None] * (len(b[0]) - len(r)) for r in b]
    # openpyxl reads "" cells written by pandas as None too.
    _compare_tables(rep, "xlsx", a[0], b[0], a[1:], b[1:])
    return rep


def _sqlite_tables(path: Path) -> dict:
    con = sqlite3.connect(path)
    out = {}
    for (name,) in con.execute("select name from sqlite_master where type='table' order by name"):
        info = list(con.execute(f'pragma table_info("{name}")'))
        cols = [r[1] for r in info]
        types = [r[2] for r in info]
        rows = [list(r) for r in con.execute(f'select * from "{name}" order by rowid')]
        out[name] = (cols, types, rows)
    con.close()
    return out


def compare_sqlite(fmt: str, ours: Path, sdk: Path, sdk_error: str | None = None) -> Report:
    rep = Report(fmt)
    a, b = _sqlite_tables(ours), _sqlite_tables(sdk)
    if sdk_error:
        rep.status = "sdk_failed"
        rep.notes.append(f"SDK: {sdk_error}; compared the {len(b)} table(s) it wrote first")
        if not set(b) <= set(a):
            rep.diff("tables", sorted(a), sorted(b))
    elif sorted(a) != sorted(b):
        rep.diff("tables", sorted(a), sorted(b))
    for name in sorted(set(a) & set(b)):
        ca, ta, ra = a[name]
        cb, tb, rb = b[name]
        for col, x, y in zip(ca, ta, tb):
            if x != y:
                rep.known[f"declared type {x} vs SDK {y} (pandas inference)"] += 1
        if fmt == "long_sqlite":
            # Row order inside a record follows recordData key order, which differs.
            if ca != cb:
                rep.diff(f"{name} columns", ca, cb)
            elif Counter(map(tuple, ra)) != Counter(map(tuple, rb)):
                only_a = Counter(map(tuple, ra)) - Counter(map(tuple, rb))
                only_b = Counter(map(tuple, rb)) - Counter(map(tuple, ra))
                rep.diff(f"{name} rows", list(only_a)[:5], list(only_b)[:5])
            else:
                rep.notes.append(f"{name}: {len(ra)} value rows, identical as a multiset")
            continue
        _compare_tables(rep, f"table {name}", ca, cb, ra, rb, types=ta)
        rep.notes.append(f"table {name}: {len(ra)} rows, {len(ca)} columns")
    return rep


def cmd_compare(ours: Path, sdk: Path) -> int:
    results = compare_dirs(ours, sdk)
    print(json.dumps(results, indent=2))
    bad = [f for f, r in results.items() if r["status"] in ("different", "missing_ours")]
    print(f"compare {ours} vs {sdk}: " + ("OK" if not bad else f"UNEXPECTED differences in {bad}"))
    return 1 if bad else 0


def compare_dirs(ours: Path, sdk: Path) -> dict:
    """Per format: status, known (deliberate) differences by category, unexpected ones."""
    errors_path = sdk / "errors.json"
    errors = json.loads(errors_path.read_text()) if errors_path.exists() else {}
    kwargs_path = sdk / "kwargs.json"
    kwargs = json.loads(kwargs_path.read_text()) if kwargs_path.exists() else {}
    whitelisted = bool(kwargs.get("variable_whitelist") or kwargs.get("form_whitelist"))
    results = {}
    for fmt, name in FILES.items():
        if whitelisted and fmt not in ("sqlite", "sqlite_by_form"):
            results[fmt] = {
                "status": "not_comparable",
                "notes": ["the SDK function takes no whitelists; ours applied them"],
            }
            continue
        a, b = ours / name, sdk / name
        if not a.exists():
            results[fmt] = {"status": "missing_ours"}
            continue
        if fmt != "parquet" and not b.exists():
            results[fmt] = {"status": "sdk_failed", "notes": [errors.get(fmt, "no SDK file")]}
            continue
        if fmt == "csv":
            rep = compare_csv(a, b)
        elif fmt == "json":
            rep = compare_json(a, b)
        elif fmt == "parquet":
            rep = compare_parquet(a, b, errors.get("parquet") if not b.exists() else None)
        elif fmt == "xlsx":
            rep = compare_xlsx(a, b)
        else:
            rep = compare_sqlite(fmt, a, b, errors.get(fmt))
        results[fmt] = rep.finish()
    return results


# --- run -----------------------------------------------------------------------------------


def cmd_run(binary: str, export_cmd: str, studies: list, work: Path, kwargs: dict) -> int:
    # Ours gets the SDK's kwargs plus include_deleted (the SDK never skips deleted records).
    options = json.dumps({"include_deleted": True, **kwargs})
    proc = subprocess.Popen(
        [binary, "simulate", "--port", "0", "--profile", "demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline()
        if not line.startswith("LISTENING"):
            raise SystemExit(f"simulator did not start: {line!r}")
        base = f"http://127.0.0.1:{int(line.split()[1])}"
        status = 0
        for study in studies:
            safe = "".join(c if c.isalnum() or c in "-_" else "_" for c in study).strip("_-")
            root = work / (safe or "study")
            cmd_fetch(base, study, root / "dump")
            subprocess.run(
                shlex.split(export_cmd) + [str(root / "dump"), str(root / "ours"), options],
                check=True,
            )
            cmd_sdk(base, study, root / "sdk", kwargs=kwargs)
            print(f"=== {study} ===")
            status |= cmd_compare(root / "ours", root / "sdk")
        return status
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def main(argv: list) -> int:
    if len(argv) == 2 and argv[0] not in ("fetch", "sdk", "compare", "run"):
        argv = ["compare", *argv]
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch")
    f.add_argument("--base-url", required=True)
    f.add_argument("--study", required=True)
    f.add_argument("--out", required=True, type=Path)
    s = sub.add_parser("sdk")
    s.add_argument("--base-url")
    s.add_argument("--study", default="STUDY")
    s.add_argument("--dump", type=Path)
    s.add_argument("--out", required=True, type=Path)
    s.add_argument("--sdk-kwargs", type=json.loads, default={}, help="JSON kwargs for the SDK")
    c = sub.add_parser("compare")
    c.add_argument("ours", type=Path)
    c.add_argument("sdk", type=Path)
    r = sub.add_parser("run")
    r.add_argument("--binary", default=os.environ.get("TRIALFLOW_BIN", "target/debug/trialflow"))
    r.add_argument(
        "--export-cmd",
        default="cargo run -q --example export_dump --",
        help="command given DUMP_DIR OUT_DIR OPTIONS_JSON",
    )
    r.add_argument("--study", action="append", dest="studies")
    r.add_argument("--work", type=Path, default=Path("compare-work"))
    r.add_argument(
        "--sdk-kwargs",
        type=json.loads,
        default={},
        help='JSON, e.g. {"use_labels_as_columns": true}; also given to ours as options',
    )
    a = p.parse_args(argv)
    if a.cmd == "fetch":
        cmd_fetch(a.base_url, a.study, a.out)
        return 0
    if a.cmd == "sdk":
        if not a.dump and not a.base_url:
            p.error("sdk needs --base-url or --dump")
        cmd_sdk(a.base_url, a.study, a.out, a.dump, a.sdk_kwargs)
        return 0
    if a.cmd == "compare":
        return cmd_compare(a.ours, a.sdk)
    return cmd_run(
        a.binary, a.export_cmd, a.studies or ["ONC-202", "CV 3/B", "DEMO"], a.work, a.sdk_kwargs
    )


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
