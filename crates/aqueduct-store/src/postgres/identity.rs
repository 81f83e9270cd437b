//! Patient identity in PostgreSQL (the same tables and semantics as SQLite's).

use chrono::Utc;
use tokio_postgres::Row;

use super::{PgStore, map_err};
use crate::identity_text::{ordered, parse_persons, parse_records, persons_text, records_text};
use aqueduct_core::error::StoreResult;
use aqueduct_core::model::*;

const DECISION_COLUMNS: &str = "record_a, record_b, verdict, reviewer, at, note";

fn row_to_decision(r: &Row) -> MatchDecision {
    let verdict: String = r.get(2);
    MatchDecision {
        a: r.get(0),
        b: r.get(1),
        // an unknown verdict in the table reads as the cautious one: keep the records apart
        verdict: MatchVerdict::parse(&verdict).unwrap_or(MatchVerdict::Unlink),
        reviewer: r.get(3),
        at: r.get(4),
        note: r.get(5),
    }
}

pub(super) async fn state(s: &PgStore, org: &str) -> StoreResult<IdentityState> {
    let e = |err| map_err(&s.location, "read identity", err);
    let mut c = s.client().await?;
    // one snapshot: the records, decisions and forced links belong together
    let tx = c
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .read_only(true)
        .start()
        .await
        .map_err(e)?;
    let next_person: i64 = tx
        .query_one(
            "SELECT COALESCE(MAX(person), 0) + 1 FROM identity_persons WHERE organization = $1",
            &[&org],
        )
        .await
        .map_err(e)?
        .get(0);
    let records = tx
        .query(
            "SELECT record, person, content_hash FROM identity_records
             WHERE organization = $1 ORDER BY record",
            &[&org],
        )
        .await
        .map_err(e)?
        .iter()
        .map(|r| IdentityRecord {
            record: r.get(0),
            person: r.get(1),
            content_hash: r.get(2),
        })
        .collect();
    let decisions = tx
        .query(
            &format!(
                "SELECT {DECISION_COLUMNS} FROM match_decisions WHERE organization = $1
                 ORDER BY id"
            ),
            &[&org],
        )
        .await
        .map_err(e)?
        .iter()
        .map(row_to_decision)
        .collect();
    let forced = tx
        .query(
            "SELECT record_a, record_b, source, at FROM match_forced
             WHERE organization = $1 ORDER BY id",
            &[&org],
        )
        .await
        .map_err(e)?
        .iter()
        .map(|r| ForcedMatch {
            a: r.get(0),
            b: r.get(1),
            source: r.get(2),
            at: r.get(3),
        })
        .collect();
    let model = tx
        .query_opt(
            "SELECT model, records, trained_at FROM match_models WHERE organization = $1",
            &[&org],
        )
        .await
        .map_err(e)?
        .map(|r| StoredMatchModel {
            model: r.get(0),
            records: r.get::<_, i64>(1).max(0) as u64,
            trained_at: r.get(2),
        });
    tx.commit().await.map_err(e)?;
    Ok(IdentityState {
        next_person,
        records,
        decisions,
        forced,
        model,
    })
}

pub(super) async fn apply(s: &PgStore, org: &str, u: &IdentityUpdate) -> StoreResult<()> {
    let e = |err| map_err(&s.location, "write identity", err);
    let now = Utc::now();
    let mut c = s.client().await?;
    let tx = c.transaction().await.map_err(e)?;
    // a plain INSERT: a person id another process handed out first fails the whole round
    for p in &u.new_persons {
        tx.execute(
            "INSERT INTO identity_persons (organization, person, created_at) VALUES ($1, $2, $3)",
            &[&org, p, &now],
        )
        .await
        .map_err(e)?;
    }
    for r in &u.records {
        tx.execute(
            "INSERT INTO identity_records (organization, record, person, content_hash, updated_at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization, record) DO UPDATE SET person = excluded.person,
                 content_hash = excluded.content_hash, updated_at = excluded.updated_at",
            &[&org, &r.record, &r.person, &r.content_hash, &now],
        )
        .await
        .map_err(e)?;
    }
    for ev in &u.events {
        tx.execute(
            "INSERT INTO identity_events (organization, at, kind, persons, records, detail)
             VALUES ($1, $2, $3, $4, $5, $6)",
            &[
                &org,
                &ev.at,
                &ev.kind,
                &persons_text(&ev.persons),
                &records_text(&ev.records),
                &ev.detail,
            ],
        )
        .await
        .map_err(e)?;
    }
    for f in &u.forced {
        tx.execute(
            "INSERT INTO match_forced (organization, record_a, record_b, source, at)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (organization, record_a, record_b, source) DO NOTHING",
            &[&org, &f.a, &f.b, &f.source, &f.at],
        )
        .await
        .map_err(e)?;
    }
    for r in &u.review_cleared_for {
        tx.execute(
            "DELETE FROM match_review
             WHERE organization = $1 AND (record_a = $2 OR record_b = $2)",
            &[&org, r],
        )
        .await
        .map_err(e)?;
    }
    for p in &u.review {
        let (a, b) = ordered(&p.a, &p.b);
        tx.execute(
            "INSERT INTO match_review (organization, record_a, record_b, weight, evidence,
                 queued_at)
             VALUES ($1, $2, $3, $4, $5, $6)
             ON CONFLICT (organization, record_a, record_b) DO UPDATE SET
                 weight = excluded.weight, evidence = excluded.evidence",
            &[&org, &a, &b, &p.weight, &p.evidence, &p.queued_at],
        )
        .await
        .map_err(e)?;
    }
    // a decision is the last word on its pair: recorded, and out of the queue
    for d in &u.decisions {
        tx.execute(
            &format!(
                "INSERT INTO match_decisions (organization, {DECISION_COLUMNS})
                 VALUES ($1, $2, $3, $4, $5, $6, $7)"
            ),
            &[
                &org,
                &d.a,
                &d.b,
                &d.verdict.as_str(),
                &d.reviewer,
                &d.at,
                &d.note,
            ],
        )
        .await
        .map_err(e)?;
        let (a, b) = ordered(&d.a, &d.b);
        tx.execute(
            "DELETE FROM match_review WHERE organization = $1 AND record_a = $2
             AND record_b = $3",
            &[&org, &a, &b],
        )
        .await
        .map_err(e)?;
    }
    if let Some(m) = &u.model {
        tx.execute(
            "INSERT INTO match_models (organization, model, records, trained_at)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (organization) DO UPDATE SET model = excluded.model,
                 records = excluded.records, trained_at = excluded.trained_at",
            &[
                &org,
                &m.model,
                &i64::try_from(m.records).unwrap_or(i64::MAX),
                &m.trained_at,
            ],
        )
        .await
        .map_err(e)?;
    }
    tx.commit().await.map_err(e)
}

async fn records_of(
    c: &tokio_postgres::Client,
    org: &str,
    person: i64,
) -> Result<Vec<String>, tokio_postgres::Error> {
    Ok(c.query(
        "SELECT record FROM identity_records WHERE organization = $1 AND person = $2
             ORDER BY record",
        &[&org, &person],
    )
    .await?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

pub(super) async fn person(
    s: &PgStore,
    org: &str,
    person: i64,
) -> StoreResult<Option<PersonSummary>> {
    let c = s.client().await?;
    let records = records_of(&c, org, person)
        .await
        .map_err(|e| map_err(&s.location, "read person", e))?;
    Ok((!records.is_empty()).then_some(PersonSummary { person, records }))
}

pub(super) async fn person_of(s: &PgStore, org: &str, record: &str) -> StoreResult<Option<i64>> {
    let c = s.client().await?;
    Ok(c.query_opt(
        "SELECT person FROM identity_records WHERE organization = $1 AND record = $2",
        &[&org, &record],
    )
    .await
    .map_err(|e| map_err(&s.location, "read person of record", e))?
    .map(|r| r.get(0)))
}

pub(super) async fn list_persons(
    s: &PgStore,
    org: &str,
    after: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<PersonSummary>> {
    let e = |err| map_err(&s.location, "list persons", err);
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT person, array_agg(record ORDER BY record) FROM identity_records
             WHERE organization = $1 AND person > $2
             GROUP BY person ORDER BY person LIMIT $3",
            &[&org, &after.unwrap_or(i64::MIN), &i64::from(limit)],
        )
        .await
        .map_err(e)?;
    Ok(rows
        .iter()
        .map(|r| PersonSummary {
            person: r.get(0),
            records: r.get(1),
        })
        .collect())
}

pub(super) async fn events(
    s: &PgStore,
    org: &str,
    person: Option<i64>,
    before_id: Option<i64>,
    limit: u32,
) -> StoreResult<Vec<StoredIdentityEvent>> {
    let like = person.map(|p| format!("%,{p},%"));
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT id, at, kind, persons, records, detail FROM identity_events
             WHERE organization = $1 AND ($2::text IS NULL OR persons LIKE $2) AND id < $3
             ORDER BY id DESC LIMIT $4",
            &[
                &org,
                &like,
                &before_id.unwrap_or(i64::MAX),
                &i64::from(limit),
            ],
        )
        .await
        .map_err(|e| map_err(&s.location, "list identity events", e))?;
    Ok(rows
        .iter()
        .map(|r| StoredIdentityEvent {
            id: r.get(0),
            event: IdentityEventRecord {
                at: r.get(1),
                kind: r.get(2),
                persons: parse_persons(r.get(3)),
                records: parse_records(r.get(4)),
                detail: r.get(5),
            },
        })
        .collect())
}

pub(super) async fn review_queue(
    s: &PgStore,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<ReviewPair>> {
    let c = s.client().await?;
    let rows = c
        .query(
            "SELECT record_a, record_b, weight, evidence, queued_at FROM match_review
             WHERE organization = $1 ORDER BY weight DESC, record_a, record_b LIMIT $2",
            &[&org, &i64::from(limit)],
        )
        .await
        .map_err(|e| map_err(&s.location, "read review queue", e))?;
    Ok(rows
        .iter()
        .map(|r| ReviewPair {
            a: r.get(0),
            b: r.get(1),
            weight: r.get(2),
            evidence: r.get(3),
            queued_at: r.get(4),
        })
        .collect())
}

pub(super) async fn decisions(
    s: &PgStore,
    org: &str,
    limit: u32,
) -> StoreResult<Vec<MatchDecision>> {
    let c = s.client().await?;
    let rows = c
        .query(
            &format!(
                "SELECT {DECISION_COLUMNS} FROM match_decisions WHERE organization = $1
                 ORDER BY id DESC LIMIT $2"
            ),
            &[&org, &i64::from(limit)],
        )
        .await
        .map_err(|e| map_err(&s.location, "list match decisions", e))?;
    Ok(rows.iter().map(row_to_decision).collect())
}

pub(super) async fn patient_sources(s: &PgStore, org: &str) -> StoreResult<Vec<String>> {
    // one index probe per connection (a loose index scan), not a scan of the organization
    let c = s.client().await?;
    let rows = c
        .query(
            "WITH RECURSIVE c(name) AS (
             SELECT MIN(connection) FROM resources WHERE organization = $1
             UNION ALL
             SELECT (SELECT MIN(connection) FROM resources
                     WHERE organization = $1 AND connection > c.name)
             FROM c WHERE c.name IS NOT NULL
         )
         SELECT name FROM c WHERE name IS NOT NULL AND EXISTS (
             SELECT 1 FROM resources r WHERE r.organization = $1 AND r.connection = c.name
                 AND r.resource_type = 'Patient')",
            &[&org],
        )
        .await
        .map_err(|e| map_err(&s.location, "list patient sources", e))?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}
