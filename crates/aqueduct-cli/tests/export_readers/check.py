"""Reads an `aqueduct export parquet` directory with DuckDB and pyarrow, and compares it with
the SQLite store it came from (read here with Python's own sqlite3 and json, not Aqueduct).

    python3 check.py STORE.db OUT_RAW OUT_CLEAN ORG

Prints one JSON line of figures; exits non-zero (an AssertionError) on any difference.
"""
import json
import sqlite3
import sys
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

store, raw_dir, clean_dir, org = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), sys.argv[4]

db = sqlite3.connect(store)
live = {}
for conn, rtype, lid, raw in db.execute(
    "SELECT connection, resource_type, logical_id, raw FROM resources "
    "WHERE organization = ? AND deleted_at IS NULL AND parse_status = 'ok'",
    (org,),
):
    live.setdefault(rtype, {})[(conn, lid)] = json.loads(raw)

figures = {}


def table(out, view):
    return str(out / view / "*" / "*" / "data.parquet")


# --- DuckDB: counts per source, and the hive partition columns ---------------------------
con = duckdb.connect()
for view, rtype in [("patient", "Patient"), ("observation", "Observation"),
                    ("condition", "Condition"), ("encounter", "Encounter")]:
    want = len(live.get(rtype, {}))
    got = con.execute(
        f"SELECT count(*) FROM read_parquet('{table(raw_dir, view)}', hive_partitioning = true)"
    ).fetchone()[0]
    assert got == want, f"{view}: DuckDB counts {got} rows, the store holds {want} {rtype}"
    orgs = con.execute(
        f"SELECT DISTINCT organization FROM read_parquet('{table(raw_dir, view)}', "
        "hive_partitioning = true)"
    ).fetchall()
    assert orgs == [(org,)], orgs
    figures[view] = got
assert figures["patient"] > 0 and figures["observation"] > 0, figures

# values: every patient's gender and birth date, every observation's status, code and value
rows = con.execute(
    f"SELECT source, id, gender, birth_date, active FROM read_parquet('{table(raw_dir, 'patient')}', "
    "hive_partitioning = true)"
).fetchall()
for source, pid, gender, birth_date, active in rows:
    p = live["Patient"][(source, pid)]
    assert gender == p.get("gender"), (pid, gender, p.get("gender"))
    assert birth_date == p.get("birthDate"), (pid, birth_date, p.get("birthDate"))
    assert active == p.get("active"), (pid, active, p.get("active"))

rows = con.execute(
    f"SELECT source, id, patient_id, status, code, value_quantity, value_unit "
    f"FROM read_parquet('{table(raw_dir, 'observation')}', hive_partitioning = true)"
).fetchall()
with_value = 0
for source, oid, patient_id, status, code, value, unit in rows:
    o = live["Observation"][(source, oid)]
    assert status == o.get("status"), (oid, status)
    codings = o.get("code", {}).get("coding") or [{}]
    assert code == codings[0].get("code"), (oid, code, codings)
    q = o.get("valueQuantity") or {}
    assert value == q.get("value"), (oid, value, q)
    assert unit == q.get("unit"), (oid, unit, q)
    ref = (o.get("subject") or {}).get("reference", "")
    assert patient_id == (ref.split("/")[-1] if ref.startswith("Patient/") else None), (oid, patient_id, ref)
    with_value += value is not None
figures["observations_with_value"] = with_value

# --- pyarrow: the schema is the ViewDefinition's types ------------------------------------
schema = pq.read_schema(next((raw_dir / "patient").glob("*/*/data.parquet")))
assert schema.field("active").type == pa.bool_(), schema
assert schema.field("birth_date").type == pa.string(), schema
assert schema.field("birth_date").metadata == {b"fhir_type": b"date"}, schema.field("birth_date").metadata
obs = pq.read_table(next((raw_dir / "observation").glob("*/*/data.parquet")))
assert obs.schema.field("value_quantity").type == pa.float64(), obs.schema
assert obs.schema.field("component_count").type == pa.int64(), obs.schema
meta = pq.read_metadata(next((raw_dir / "observation").glob("*/*/data.parquet")))
assert meta.metadata[b"aqueduct.view"] == b"observation", meta.metadata
assert meta.row_group(0).column(0).compression == "SNAPPY", meta.row_group(0).column(0)
ids = set(obs.column("id").to_pylist())
assert ids == {lid for (_, lid) in live["Observation"]}, "pyarrow reads other observation ids"

# --- the clean form: facade ids, and the same rows ----------------------------------------
clean = pq.read_table(next((clean_dir / "patient").glob("*/*/data.parquet")))
sources = {s for (s, _) in live["Patient"]}
assert all(any(i.startswith(f"{s}.") for s in sources) for i in clean.column("id").to_pylist()), \
    clean.column("id").to_pylist()[:3]
assert clean.num_rows == figures["patient"], (clean.num_rows, figures["patient"])
clean_obs = con.execute(
    f"SELECT count(*), count(DISTINCT patient_id) FROM read_parquet('{table(clean_dir, 'observation')}')"
).fetchone()
assert clean_obs[0] == figures["observation"], clean_obs
figures["clean_observation_patients"] = clean_obs[1]

print(json.dumps(figures))
