//! Patient identity in SQLite: persons, records' persons, events, decisions, forced links, the
//! review queue and the match model of each organization.

use chrono::Utc;
use rusqlite::{Connection, OptionalExtension, Row, params};

use super::{map_err, parse_ts, ts};
use crate::identity_text::{ordered, parse_persons, parse_records, persons_text, records_text};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

fn row_to_decision(r: &Row) -> rusqlite::Result<MatchDecision> {
    let verdict: String = r.get(2)?;
    Ok(MatchDecision {
        a: r.get(0)?,
        b: r.get(1)?,
        // an unknown verdict in the table reads as the cautious one: keep the records apart
        verdict: MatchVerdict::parse(&verdict).unwrap_or(MatchVerdict::Unlink),
        reviewer: r.get(3)?,
        at: parse_ts(&r.get::<_, String>(4)?),
        note: r.get(5)?,
    })
}

const DECISION_COLUMNS: &str = "record_a, record_b, verdict, reviewer, at, note";

pub(super) fn state(c: &mut Connection, loc: &str, org: &str) -> StoreResult<IdentityState> {
    let e = |err| map_err(loc, "read identity", err);
    let tx = c.transaction().map_err(e)?;
    let next_person: i64 = tx
        .query_row(
            "SELECT COALESCE(MAX(person), 0) + 1 FROM identity_persons WHERE organization = ?1",
            params![org],
            |r| r.get(0),
        )
        .map_err(e)?;
    let records = tx
        .prepare_cached(
            "SELECT record, person, content_hash FROM identity_records
             WHERE organization = ?1 ORDER BY record",
        )
        .and_then(|mut s| {
            s.query_map(params![org], |r| {
                Ok(IdentityRecord {
                    record: r.get(0)?,
                    person: r.get(1)?,
                    content_hash: r.get(2)?,
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(e)?;
    let decisions = tx
        .prepare_cached(&format!(
            "SELECT {DECISION_COLUMNS} FROM match_decisions WHERE organization = ?1 ORDER BY id"
        ))
        .and_then(|mut s| {
            s.query_map(params![org], row_to_decision)?
                .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(e)?;
    let forced = tx
        .prepare_cached(
            "SELECT record_a, record_b, source, at FROM match_forced
             WHERE organization = ?1 ORDER BY id",
        )
        .and_then(|mut s| {
            s.query_map(params![org], |r| {
                Ok(ForcedMatch {
                    a: r.get(0)?,
                    b: r.get(1)?,
                    source: r.get(2)?,
                    at: parse_ts(&r.get::<_, String>(3)?),
                })
            })?
            .collect::<rusqlite::Result<Vec<_>>>()
        })
        .map_err(e)?;
    let model = tx
        .query_row(
            "SELECT model, records, trained_at FROM match_models WHERE organization = ?1",
            params![org],
            |r| {
                Ok(StoredMatchModel {
                    model: r.get(0)?,
                    records: r.get::<_, i64>(1)?.max(0) as u64,
                    trained_at: parse_ts(&r.get::<_, String>(2)?),
                })
            },
        )
        .optional()
        .map_err(e)?;
    tx.commit().map_err(e)?;
    Ok(IdentityState {
        next_person,
        records,
        decisions,
        forced,
        model,
    })
}

pub(super) fn apply(
    c: &mut Connection,
    loc: &str,
    org: &str,
    u: &IdentityUpdate,
) -> StoreResult<()> {
    let e = |err| map_err(loc, "write identity", err);
    let now = ts(Utc::now());
    let tx = c.transaction().map_err(e)?;
    {
        // a plain INSERT: a person id another process handed out first fails the whole round
        let mut s = tx
            .prepare_cached(
                "INSERT INTO identity_persons (organization, person, created_at)
                 VALUES (?1, ?2, ?3)",
            )
            .map_err(e)?;
        for p in &u.new_persons {
            s.execute(params![org, p, now]).map_err(e)?;
        }
        let mut s = tx
            .prepare_cached(
                "INSERT INTO identity_records (organization, record, person, content_hash,
                     updated_at)
                 VALUES (?1, ?2, ?3, ?4, ?5)
                 ON CONFLICT (organization, record) DO UPDATE SET person = excluded.person,
                     content_hash = excluded.content_hash, updated_at = excluded.updated_at",
            )
            .map_err(e)?;
        for r in &u.records {
            s.execute(params![org, r.record, r.person, r.content_hash, now])
                .map_err(e)?;
        }
        let mut s = tx
            .prepare_cached(
                "INSERT INTO identity_events (organization, at, kind, persons, records, detail)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )
            .map_err(e)?;
        for ev in &u.events {
            s.execute(params![
                org,
                ts(ev.at),
                ev.kind,
                persons_text(&ev.persons),
                records_text(&ev.records),
                ev.detail
            ])
            .map_err(e)?;
        }
        let mut s = tx
            .prepare_cached(
                "INSERT OR IGNORE INTO match_forced (organization, record_a, record_b, source, at)
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )
            .map_err(e)?;
        for f in &u.forced {
            s.execute(params![org, f.a, f.b, f.source, ts(f.at)])
                .map_err(e)?;
        }
        let mut s = tx
            .prepare_cached(
                "DELETE FROM match_review
                 WHERE organization = ?1 AND (record_a = ?2 OR record_b = ?2)",
            )
            .map_err(e)?;
        for r in &u.review_cleared_for {
            s.execute(params![org, r]).map_err(e)?;
        }
        let mut s = tx
            .prepare_cached(
                "INSERT INTO match_review (organization, record_a, record_b, weight, evidence,
                     queued_at)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)
                 ON CONFLICT (organization, record_a, record_b) DO UPDATE SET
                     weight = excluded.weight, evidence = excluded.evidence",
            )
            .map_err(e)?;
        for p in &u.review {
            let (a, b) = ordered(&p.a, &p.b);
            s.execute(params![org, a, b, p.weight, p.evidence, ts(p.queued_at)])
                .map_err(e)?;
        }
        // a decision is the last word on its pair: recorded, and out of the queue
        let mut s = tx
            .prepare_cached(&format!(
                "INSERT INTO match_decisions (organization, {DECISION_COLUMNS})
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)"
            ))
            .map_err(e)?;
        let mut out = tx
            .prepare_cached(
                "DELETE FROM match_review WHERE organization = ?1 AND record_a = ?2
                 AND record_b = ?3",
            )
            .map_err(e)?;
        for d in &u.decisions {
            s.execute(params![
                org,
                d.a,
                d.b,
                d.verdict.as_str(),
                d.reviewer,
                ts(d.at),
                d.note
            ])
            .map_err(e)?;
            let (a, b) = ordered(&d.a, &d.b);
            out.execute(params![org, a, b]).map_err(e)?;
        }
        if let Some(m) = &u.model {
            tx.execute(
                "INSERT INTO match_models (organization, model, records, trained_at)
                 VALUES (?1, ?2, ?3, ?4)
                 ON CONFLICT (organization) DO UPDATE SET model = excluded.model,
                     records = excluded.records, trained_at = excluded.trained_at",
                params![
                    org,
                    m.model,
                    i64::try_from(m.records).unwrap_or(i64::MAX),
                    ts(m.trained_at)
                ],
            )
            .map_err(e)?;
        }
    }
    tx.commit().map_err(e)
}

fn records_of(c: &Connection, org: &str, person: i64) -> rusqlite::Result<Vec<String>> {
    c.prepare_cached(
        "SELECT record FROM identity_records WHERE organization = ?1 AND person = ?2
         ORDER BY record",
    )?
    .query_map(params![org, person], |r| r.get(0))?
    .collect()
}

pub(super) fn person(
    c: &mut Connection,
    loc: &str,
    org: &str,
    person: i64,
) -> StoreResult<Option<PersonSummary>> {
    let records = records_of(c, org, person).map_err(|e| map_err(loc, "read person", e))?;
    Ok((!records.is_empty()).then_some(PersonSummary { person, records }))
}

pub(super) fn person_of(
    c: &mut Connection,
    loc: &str,
    org: &str,
    record: &str,
) -> StoreResult<Option<i64>> {
    c.prepare_cached("SELECT person FROM identity_records WHERE organization = ?1 AND record = ?2")
        .and_then(|mut s| s.query_row(params![org, record], |r| r.get(0)).optional())
        .map_err(|e| map_err(loc, "read person of record", e))
}

pub(super) fn list_persons(
    c: &mut Connection,
    loc: &str,
    org: &str,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<PersonSummary>> {
    let e = |err| map_err(loc, "list persons", err);
    let ids: Vec<i64> = c
        .prepare_cached(
            "SELECT DISTINCT person FROM identity_records
             WHERE organization = ?1 AND person > ?2 ORDER BY person LIMIT ?3",
        )
        .and_then(|mut s| {
            s.query_map(params![org, after.unwrap_or(i64::MIN), limit], |r| r.get(0))?
                .collect::<rusqlite::Result<Vec<i64>>>()
        })
        .map_err(e)?;
    ids.into_iter()
        .map(|p| {
            Ok(PersonSummary {
                person: p,
                records: records_of(c, org, p).map_err(e)?,
            })
        })
        .collect()
}

pub(super) fn events(
    c: &mut Connection,
    loc: &str,
    org: &str,
    person: Option<i64>,
    before_id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredIdentityEvent>> {
    let like = person.map(|p| format!("%,{p},%"));
    c.prepare_cached(
        "SELECT id, at, kind, persons, records, detail FROM identity_events
         WHERE organization = ?1 AND (?2 IS NULL OR persons LIKE ?2) AND id < ?3
         ORDER BY id DESC LIMIT ?4",
    )
    .and_then(|mut s| {
        s.query_map(
            params![org, like, before_id.unwrap_or(i64::MAX), limit],
            |r| {
                Ok(StoredIdentityEvent {
                    id: r.get(0)?,
                    event: IdentityEventRecord {
                        at: parse_ts(&r.get::<_, String>(1)?),
                        kind: r.get(2)?,
                        persons: parse_persons(&r.get::<_, String>(3)?),
                        records: parse_records(&r.get::<_, String>(4)?),
                        detail: r.get(5)?,
                    },
                })
            },
        )?
        .collect()
    })
    .map_err(|e| map_err(loc, "list identity events", e))
}

pub(super) fn review_queue(
    c: &mut Connection,
    loc: &str,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<ReviewPair>> {
    c.prepare_cached(
        "SELECT record_a, record_b, weight, evidence, queued_at FROM match_review
         WHERE organization = ?1 ORDER BY weight DESC, record_a, record_b LIMIT ?2",
    )
    .and_then(|mut s| {
        s.query_map(params![org, limit], |r| {
            Ok(ReviewPair {
                a: r.get(0)?,
                b: r.get(1)?,
                weight: r.get(2)?,
                evidence: r.get(3)?,
                queued_at: parse_ts(&r.get::<_, String>(4)?),
            })
        })?
        .collect()
    })
    .map_err(|e| map_err(loc, "read review queue", e))
}

pub(super) fn decisions(
    c: &mut Connection,
    loc: &str,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<MatchDecision>> {
    c.prepare_cached(&format!(
        "SELECT {DECISION_COLUMNS} FROM match_decisions WHERE organization = ?1
         ORDER BY id DESC LIMIT ?2"
    ))
    .and_then(|mut s| s.query_map(params![org, limit], row_to_decision)?.collect())
    .map_err(|e| map_err(loc, "list match decisions", e))
}

pub(super) fn patient_sources(
    c: &mut Connection,
    loc: &str,
    org: &str,
) -> StoreResult<Vec<String>> {
    // one index probe per connection (a loose index scan), not a scan of the organization
    c.prepare_cached(
        "WITH RECURSIVE c(name) AS (
             SELECT MIN(connection) FROM resources WHERE organization = ?1
             UNION ALL
             SELECT (SELECT MIN(connection) FROM resources
                     WHERE organization = ?1 AND connection > c.name)
             FROM c WHERE c.name IS NOT NULL
         )
         SELECT name FROM c WHERE name IS NOT NULL AND EXISTS (
             SELECT 1 FROM resources r WHERE r.organization = ?1 AND r.connection = c.name
                 AND r.resource_type = 'Patient')",
    )
    .and_then(|mut s| s.query_map(params![org], |r| r.get(0))?.collect())
    .map_err(|e| map_err(loc, "list patient sources", e))
}
