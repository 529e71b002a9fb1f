"""Run the real imednet SDK (0.5.0) against the Rust simulator.

The simulator is taken from env SIM_PORT when set; otherwise the fixture starts
`trialflow simulate` (binary from env TRIALFLOW_BIN, default target/debug/trialflow) on a
free port and stops it afterwards.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pandas as pd
import pytest
from imednet import ImednetSDK
from imednet.errors import ApiError, NotFoundError
from imednet.integrations import export

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "demo-api-key"
SECURITY_KEY = "demo-security-key"
STUDIES = ["CV 3/B", "DEMO", "ONC-202"]


@pytest.fixture(scope="session")
def sdk(port):
    # Trailing "/api/" exercises the SDK's base-URL normalisation.
    with ImednetSDK(
        api_key=API_KEY, security_key=SECURITY_KEY, base_url=f"http://127.0.0.1:{port}/api/"
    ) as client:
        yield client


def test_studies(sdk):
    studies = sdk.studies.list()
    assert [s.study_key for s in studies] == STUDIES
    assert sdk.studies.get(None, "CV 3/B").study_name == 'Cardio "B" arm'


ENDPOINTS = [
    ("sites", "site_id"),
    ("subjects", "subject_key"),
    ("records", "record_id"),
    ("record_revisions", "record_revision_id"),
    ("forms", "form_id"),
    ("intervals", "interval_id"),
    ("variables", "variable_id"),
    ("queries", "annotation_id"),
    ("codings", "coding_id"),
    ("users", "user_id"),
    ("visits", "visit_id"),
]


@pytest.mark.parametrize("study", STUDIES)
@pytest.mark.parametrize("endpoint,id_attr", ENDPOINTS)
def test_list_and_get_every_endpoint(sdk, study, endpoint, id_attr):
    ep = getattr(sdk, endpoint)
    items = ep.list(study_key=study)
    assert items, f"{endpoint} of {study} is empty"
    ids = [getattr(i, id_attr) for i in items]
    assert len(set(ids)) == len(ids), "ids must be unique"
    for item in (items[0], items[-1]):
        assert getattr(item, "study_key", study) == study
        got = ep.get(study, getattr(item, id_attr))
        assert getattr(got, id_attr) == getattr(item, id_attr)


def test_paging_crosses_pages(sdk):
    # records page with the SDK's default size (100); DEMO has > 400 records.
    records = sdk.records.list(study_key="DEMO")
    assert len(records) > 400
    assert [r.record_id for r in records] == sorted(r.record_id for r in records)
    assert any(v == "" for r in records for v in r.record_data.values())
    assert any(r.deleted for r in records)


def test_record_revisions_and_queries_shape(sdk):
    q = sdk.queries.list(study_key="DEMO")[0]
    assert q.query_comments and q.query_comments[0].sequence == 1
    u = sdk.users.list(study_key="DEMO")
    assert all(x.user_active_in_study for x in u)
    all_users = sdk.users.list(study_key="DEMO", include_inactive=True)
    assert len(all_users) > len(u)
    assert all_users[0].roles[0].date_created.year == 2024


def test_filters_with_spaces_quotes_and_lists(sdk):
    sites = sdk.sites.list(study_key="DEMO")
    name = next(s.site_name for s in sites if "'" in s.site_name or " " in s.site_name)
    found = sdk.sites.list(study_key="DEMO", site_name=name)
    assert [s.site_name for s in found] == [name]
    recs = sdk.records.list(study_key="DEMO", form_id=[1, 2])
    assert recs and {r.form_id for r in recs} == {1, 2}
    recs = sdk.records.list(study_key="DEMO", site_id=(">=", 3), form_key="VS")
    assert recs and all(r.site_id >= 3 and r.form_key == "VS" for r in recs)
    recs = sdk.records.list(study_key="DEMO", date_created=("<", "2024-01-01T01:00:00Z"))
    assert recs and all(r.date_created.hour == 0 for r in recs)
    # An offset date: 02:00+02:00 is midnight UTC.
    none = sdk.records.list(study_key="DEMO", date_created=("<", "2024-01-01T02:00:00+02:00"))
    assert none == []
    vars_ = sdk.variables.list(study_key="DEMO", variableNames=["DM_text1", "VS_number1"])
    assert {v.variable_name for v in vars_} == {"DM_text1", "VS_number1"}


def test_record_data_filter(sdk):
    hits = sdk.records.list(study_key="DEMO", record_data_filter="DM_text1==fever")
    assert hits and all(r.record_data["DM_text1"] == "fever" for r in hits)
    memo = sdk.records.list(study_key="DEMO", record_data_filter='DM_memo7=~"HEADACHE and"')
    assert memo and all("headache and" in r.record_data["DM_memo7"].lower() for r in memo)
    with pytest.raises(ApiError) as err:
        sdk.records.list(study_key="DEMO", record_data_filter="DM_text1==a;DM_text1==b,DM_number2>1")
    assert "400" in str(err.value) or getattr(err.value, "status_code", 400) == 400


def test_errors(sdk, port):
    with pytest.raises(ApiError):
        sdk.sites.list(study_key="DEMO", bogus_attr=1)
    with pytest.raises(NotFoundError):
        sdk.sites.list(study_key="NO-SUCH-STUDY")
    bad = ImednetSDK(api_key="wrong", security_key="nope", base_url=f"http://127.0.0.1:{port}")
    with pytest.raises(ApiError):
        bad.studies.list()
    bad.close()


def _vars(sdk, study, form_key):
    return [v for v in sdk.variables.list(study_key=study) if v.form_key == form_key]


def test_create_records_and_poll(sdk):
    study = "DEMO"
    before = len(sdk.records.list(study_key=study))
    subjects_before = len(sdk.subjects.list(study_key=study))
    ae = _vars(sdk, study, "AE")
    memo = next(v.variable_name for v in ae if v.variable_type == "MEMO")
    token = f"token {uuid.uuid4().hex[:8]}"
    site = sdk.sites.list(study_key=study)[0].site_name
    items = [
        {"formKey": "AE", "subjectKey": "01-001", "data": {memo: token}},
        {"formKey": "AE", "subjectKey": "02-002", "intervalName": "Baseline", "data": {memo: token}},
        {"formKey": "DM", "siteName": site, "data": {}},
    ]
    job = sdk.records.create(study, items)
    assert job.state == "created" and job.batch_id
    done = sdk.poll_job(study, job.batch_id, interval=1, timeout=30)
    assert done.state == "completed"
    assert any(j.batch_id == job.batch_id for j in sdk.jobs.list(study_key=study))
    assert sdk.jobs.get(study, job.batch_id).progress == 100
    after = sdk.records.list(study_key=study)
    assert len(after) == before + 3
    hits = sdk.records.list(study_key=study, record_data_filter=f'{memo}=="{token}"')
    assert len(hits) == 2
    assert len(sdk.subjects.list(study_key=study)) == subjects_before + 1
    revs = sdk.record_revisions.list(study_key=study, record_id=hits[0].record_id)
    assert revs and revs[-1].record_revision == 1

    # Updating an existing record adds a revision.
    upd = sdk.records.create(study, [{"formKey": "AE", "recordId": hits[0].record_id, "data": {memo: "changed"}}])
    sdk.poll_job(study, upd.batch_id, interval=1, timeout=30)
    assert sdk.records.get(study, hits[0].record_id).record_data[memo] == "changed"
    revs = sdk.record_revisions.list(study_key=study, record_id=hits[0].record_id)
    assert max(r.record_revision for r in revs) == 2


def test_invalid_items_fail_the_job(sdk):
    job = sdk.records.create("DEMO", [{"formKey": "NOPE", "subjectKey": "01-001", "data": {}}])
    with pytest.raises(RuntimeError):
        sdk.poll_job("DEMO", job.batch_id, interval=1, timeout=30)
    job = sdk.records.create(
        "DEMO", [{"formKey": "DM", "siteName": "Boston General 1", "subjectKey": "01-001", "data": {}}]
    )
    with pytest.raises(RuntimeError):
        sdk.poll_job("DEMO", job.batch_id, interval=1, timeout=30)


def test_sdk_retries_post_on_5xx_defect(sdk, port):
    """SDK 0.5.0 defect made visible: a 503 on POST /records is sent three times."""
    import httpx

    base = f"http://127.0.0.1:{port}"
    keys = {"x-api-key": API_KEY, "x-imn-security-key": SECURITY_KEY}
    rule = {"rules": [{"study": "ONC-202", "endpoint": "records", "method": "POST",
                       "kind": {"type": "status", "status": 503}, "count": 3}]}
    assert httpx.put(f"{base}/__sim/faults", json=rule, headers=keys).status_code == 200
    before = httpx.get(f"{base}/__sim/stats", headers=keys).json()["postsByStudy"].get("ONC-202", 0)
    with pytest.raises(Exception):
        sdk.records.create("ONC-202", [{"formKey": "DM", "subjectKey": "01-001", "data": {}}])
    after = httpx.get(f"{base}/__sim/stats", headers=keys).json()["postsByStudy"].get("ONC-202", 0)
    assert after - before == 3
    httpx.delete(f"{base}/__sim/faults", headers=keys)


# --- export helpers -------------------------------------------------------------------------

EXPORT_STUDY = "ONC-202"


@pytest.fixture(scope="module")
def expected(sdk):
    records = sdk.records.list(study_key=EXPORT_STUDY)
    variables = sdk.variables.list(study_key=EXPORT_STUDY)
    return records, [v.variable_name for v in variables]


def test_export_csv(sdk, tmp_path, expected):
    records, names = expected
    path = tmp_path / "out.csv"
    export.export_to_csv(sdk, EXPORT_STUDY, str(path))
    df = pd.read_csv(path)
    assert len(df) == len(records)
    assert list(df.columns[:6]) == ["recordId", "subjectKey", "visitId", "formId", "recordStatus", "dateCreated"]
    assert list(df.columns[6:]) == names
    # Formula-injection guard on CSV.
    text = path.read_text()
    assert "'=1+1" in text or "=1+1" not in text


def test_export_json(sdk, tmp_path, expected):
    records, _ = expected
    path = tmp_path / "out.json"
    export.export_to_json(sdk, EXPORT_STUDY, str(path))
    data = json.loads(path.read_text())
    assert len(data["recordId"]) == len(records)


def test_export_parquet(sdk, tmp_path):
    # Fully answered study: works.
    records = sdk.records.list(study_key="CV 3/B")
    path = tmp_path / "out.parquet"
    export.export_to_parquet(sdk, "CV 3/B", str(path))
    assert len(pd.read_parquet(path)) == len(records)


def test_export_parquet_sdk_defect_on_empty_answers(sdk, tmp_path):
    # SDK defect: unanswered values arrive as "" (as on the real API), so a NUMBER column
    # holds str and int and pyarrow refuses it. Documented, not worked around.
    import pyarrow

    with pytest.raises(pyarrow.lib.ArrowTypeError):
        export.export_to_parquet(sdk, EXPORT_STUDY, str(tmp_path / "bad.parquet"))


def test_export_excel(sdk, tmp_path, expected):
    records, _ = expected
    path = tmp_path / "out.xlsx"
    export.export_to_excel(sdk, EXPORT_STUDY, str(path))
    assert len(pd.read_excel(path)) == len(records)


def test_export_sql_with_whitelists(sdk, tmp_path, expected):
    records, names = expected
    db = tmp_path / "out.db"
    export.export_to_sql(sdk, EXPORT_STUDY, "records", f"sqlite:///{db}")
    con = sqlite3.connect(db)
    assert con.execute("select count(*) from records").fetchone()[0] == len(records)
    # Whitelists travel as variableNames==a,variableNames==b;formIds==1 filters.
    keep = [n for n in names if n.startswith("DM_")][:2]
    export.export_to_sql(
        sdk, EXPORT_STUDY, "dm", f"sqlite:///{db}", variable_whitelist=keep, form_whitelist=[1]
    )
    cols = [r[1] for r in con.execute("pragma table_info(dm)")]
    assert cols[6:] == keep
    n_dm = sum(1 for r in records if r.form_id == 1)
    assert con.execute("select count(*) from dm").fetchone()[0] == n_dm
    con.close()


def test_export_sql_by_form_and_long(sdk, tmp_path, expected):
    records, _ = expected
    db = tmp_path / "forms.db"
    export.export_to_sql_by_form(sdk, EXPORT_STUDY, f"sqlite:///{db}")
    con = sqlite3.connect(db)
    tables = {r[0] for r in con.execute("select name from sqlite_master where type='table'")}
    forms = {f.form_key for f in sdk.forms.list(study_key=EXPORT_STUDY)}
    assert forms <= tables
    total = sum(con.execute(f'select count(*) from "{t}"').fetchone()[0] for t in forms)
    assert total == len(records)
    export.export_to_long_sql(sdk, EXPORT_STUDY, "long", f"sqlite:///{db}")
    n_values = sum(len(r.record_data) for r in records)
    assert con.execute("select count(*) from long").fetchone()[0] == n_values
    con.close()
