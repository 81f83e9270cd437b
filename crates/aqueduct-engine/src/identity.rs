//! Patient identity of an organization, kept in the store: after every sync, Bulk import and
//! HL7-driven refresh, the organization's new or changed Patients are matched (each against its
//! blocks only), hard evidence from sources becomes forced links, and the round is written in
//! one transaction.
//!
//! How a round goes: the store's identity state (records with their persons and content
//! hashes, reviewer decisions, forced links, the model) → every live Patient of every
//! connection of the organization is read and turned into a matcher record by
//! `aqueduct_match::fhir` → records whose bytes are unchanged are restored with their person
//! without being compared; new and changed ones are upserted → each same-person
//! `Patient.link` (`replaced-by`, `replaces`, `refer`) and each active HL7 merge or link
//! (`Linkage` resources written by the HL7 conversion for ADT A40/A34/A24) not seen before is
//! a forced link → persons, events with their evidence, review pairs and the model are
//! written by [`Identities::apply_identity`]. Reviewer decisions are constraints the matcher
//! never overturns.
//!
//! The model: m and u estimated by EM on the organization's own records once it has
//! [`TRAIN_AT`] of them, and again whenever it has doubled since. A new model does not regroup
//! everyone: it applies to what later rounds compare (a person a round touches is regrouped
//! under it, keeping its id for the larger part).
//!
//! [`StoreIdentity`] is the adapter from `aqueduct-match`'s [`IdentityStore`] to the store: it
//! holds what was loaded and collects the round's changes in an [`IdentityUpdate`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use aqueduct_core::model::*;
use aqueduct_core::{ConnectionRef, Store};
use aqueduct_match::fhir::{PatientFacts, link_target, patient_from_slice};
use aqueduct_match::identity::{ForcedLink, IdentityEvent, ReviewerDecision, Verdict};
use aqueduct_match::{
    Evidence, Identity, IdentityStore, MatchError, Matcher, Model, PersonId, Settings,
};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::EngineError;

/// Records an organization needs before its model is estimated from them (below that the
/// matcher's initial model, which needs no training, is used).
pub const TRAIN_AT: usize = 200;

/// Patients read from the store per page.
const PAGE: u32 = 1_000;

/// What one round of identity did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct IdentityReport {
    /// Patient records of the organization.
    pub records: usize,
    /// Records compared in this round (new or changed).
    pub matched: usize,
    /// Persons with records.
    pub persons: usize,
    /// Persons whose records come from more than one connection.
    pub across_sources: usize,
    /// Pairs awaiting a reviewer after the round.
    pub awaiting_review: usize,
    /// Forced links new in this round (Patient.link, HL7 merges and links).
    pub forced: usize,
    /// Identity events recorded in this round.
    pub events: usize,
    /// Whether the model was estimated again in this round.
    pub trained: bool,
    /// Patients that could not be read as a Patient (kept as they are, not matched).
    pub unreadable: usize,
}

/// The adapter from the matcher's [`IdentityStore`] to the store: what was loaded, plus the
/// changes of this round.
pub struct StoreIdentity {
    next: i64,
    persons: HashMap<String, PersonId>,
    hashes: HashMap<String, String>,
    decisions: Vec<ReviewerDecision>,
    forced: Vec<ForcedLink>,
    new_persons: Vec<i64>,
    records: BTreeMap<String, i64>,
    events: Vec<IdentityEventRecord>,
    new_decisions: Vec<MatchDecision>,
    new_forced: Vec<ForcedMatch>,
}

fn to_i64(p: PersonId) -> Result<i64, MatchError> {
    i64::try_from(p.0).map_err(|_| MatchError::Store(format!("person id {} out of range", p.0)))
}

fn verdict(v: MatchVerdict) -> Verdict {
    match v {
        MatchVerdict::Link => Verdict::Link,
        MatchVerdict::Unlink => Verdict::Unlink,
    }
}

impl StoreIdentity {
    fn from_state(state: &IdentityState) -> StoreIdentity {
        StoreIdentity {
            next: state.next_person.max(1),
            persons: state
                .records
                .iter()
                .map(|r| (r.record.clone(), PersonId(r.person.max(0) as u64)))
                .collect(),
            hashes: state
                .records
                .iter()
                .map(|r| (r.record.clone(), r.content_hash.clone()))
                .collect(),
            decisions: state
                .decisions
                .iter()
                .map(|d| ReviewerDecision {
                    a: d.a.clone(),
                    b: d.b.clone(),
                    verdict: verdict(d.verdict),
                    reviewer: d.reviewer.clone(),
                    at: d.at,
                })
                .collect(),
            forced: state
                .forced
                .iter()
                .map(|f| ForcedLink {
                    a: f.a.clone(),
                    b: f.b.clone(),
                    source: f.source.clone(),
                    at: f.at,
                })
                .collect(),
            new_persons: Vec::new(),
            records: BTreeMap::new(),
            events: Vec::new(),
            new_decisions: Vec::new(),
            new_forced: Vec::new(),
        }
    }

    /// The round's changes, for [`Identities::apply_identity`].
    fn take_update(&mut self) -> IdentityUpdate {
        let records = std::mem::take(&mut self.records)
            .into_iter()
            .map(|(record, person)| IdentityRecord {
                content_hash: self.hashes.get(&record).cloned().unwrap_or_default(),
                record,
                person,
            })
            .collect();
        IdentityUpdate {
            new_persons: std::mem::take(&mut self.new_persons),
            records,
            events: std::mem::take(&mut self.events),
            decisions: std::mem::take(&mut self.new_decisions),
            forced: std::mem::take(&mut self.new_forced),
            ..IdentityUpdate::default()
        }
    }
}

impl IdentityStore for StoreIdentity {
    fn allocate_person(&mut self) -> Result<PersonId, MatchError> {
        let p = self.next;
        self.next += 1;
        self.new_persons.push(p);
        Ok(PersonId(p.max(0) as u64))
    }

    fn person_of(&self, record: &str) -> Result<Option<PersonId>, MatchError> {
        Ok(self.persons.get(record).copied())
    }

    fn set_person(&mut self, record: &str, person: PersonId) -> Result<(), MatchError> {
        // only what changed is written: a record seen for the first time, or one that moved
        let known = self.persons.get(record) == Some(&person) && self.hashes.contains_key(record);
        self.persons.insert(record.to_string(), person);
        if !known {
            self.records.insert(record.to_string(), to_i64(person)?);
        }
        Ok(())
    }

    fn append_event(&mut self, event: &IdentityEvent) -> Result<(), MatchError> {
        self.events.push(event_record(event, Utc::now())?);
        Ok(())
    }

    fn events(&self) -> Result<Vec<IdentityEvent>, MatchError> {
        // the events of this round; the store keeps the earlier ones
        self.events
            .iter()
            .map(|e| serde_json::from_str(&e.detail).map_err(MatchError::from))
            .collect()
    }

    fn save_decision(&mut self, d: &ReviewerDecision) -> Result<(), MatchError> {
        self.new_decisions.push(MatchDecision {
            a: d.a.clone(),
            b: d.b.clone(),
            verdict: match d.verdict {
                Verdict::Link => MatchVerdict::Link,
                Verdict::Unlink => MatchVerdict::Unlink,
            },
            reviewer: d.reviewer.clone(),
            at: d.at,
            note: None,
        });
        self.decisions.push(d.clone());
        Ok(())
    }

    fn decisions(&self) -> Result<Vec<ReviewerDecision>, MatchError> {
        Ok(self.decisions.clone())
    }

    fn save_forced(&mut self, f: &ForcedLink) -> Result<(), MatchError> {
        self.new_forced.push(ForcedMatch {
            a: f.a.clone(),
            b: f.b.clone(),
            source: f.source.clone(),
            at: f.at,
        });
        self.forced.push(f.clone());
        Ok(())
    }

    fn forced(&self) -> Result<Vec<ForcedLink>, MatchError> {
        Ok(self.forced.clone())
    }
}

/// An event as the store keeps it: kind, persons (the kept one first), records, and the whole
/// event with its evidence as JSON.
fn event_record(e: &IdentityEvent, at: DateTime<Utc>) -> Result<IdentityEventRecord, MatchError> {
    let (kind, persons, records): (&str, Vec<PersonId>, Vec<String>) = match e {
        IdentityEvent::Created { person, record } => {
            ("created", vec![*person], vec![record.clone()])
        }
        IdentityEvent::Joined { person, record, .. } => {
            ("joined", vec![*person], vec![record.clone()])
        }
        IdentityEvent::Merged {
            kept,
            absorbed,
            evidence,
        } => {
            let mut p = vec![*kept];
            p.extend(absorbed.iter().copied());
            let r: BTreeSet<String> = evidence
                .iter()
                .flat_map(|l| [l.a.clone(), l.b.clone()])
                .collect();
            ("merged", p, r.into_iter().collect())
        }
        IdentityEvent::Split {
            from, into, moved, ..
        } => {
            let mut p = vec![*from];
            p.extend(into.iter().copied());
            ("split", p, moved.clone())
        }
    };
    Ok(IdentityEventRecord {
        at,
        kind: kind.to_string(),
        persons: persons.into_iter().map(to_i64).collect::<Result<_, _>>()?,
        records,
        detail: serde_json::to_string(e)?,
    })
}

/// A Patient of the organization as the matcher reads it.
struct Loaded {
    facts: PatientFacts,
    hash: String,
}

/// A same-person link a source asserted: (a, b, what said so).
type SourceLink = (String, String, String);

/// Every live Patient of the organization, and the forced links its sources assert.
async fn load_patients(
    store: &dyn Store,
    organization: &str,
) -> Result<(Vec<Loaded>, Vec<SourceLink>, usize), EngineError> {
    let mut patients = Vec::new();
    let mut links = Vec::new();
    let mut unreadable = 0usize;
    for name in store.patient_sources(organization).await? {
        let conn = ConnectionRef::new(organization, &name);
        let mut after: Option<String> = None;
        loop {
            let page = store
                .list_resources(&conn, "Patient", after.as_deref(), PAGE, false)
                .await?;
            let Some(last) = page.last() else { break };
            after = Some(last.logical_id.clone());
            let full = page.len() == PAGE as usize;
            for r in page {
                match patient_from_slice(&name, &r.bytes) {
                    Ok(facts) => {
                        for l in facts.links.iter().filter(|l| l.is_same_person()) {
                            if let Some(other) = link_target(&name, &l.other) {
                                links.push((
                                    facts.record.id.clone(),
                                    other,
                                    format!(
                                        "FHIR Patient.link {} from {}",
                                        l.kind, facts.record.id
                                    ),
                                ));
                            }
                        }
                        patients.push(Loaded {
                            facts,
                            hash: r.content_hash,
                        });
                    }
                    Err(_) => unreadable += 1,
                }
            }
            if !full {
                break;
            }
        }
        links.extend(linkages(store, &conn).await?);
    }
    Ok((patients, links, unreadable))
}

/// Active `Linkage` resources of a connection (the HL7 conversion writes one per ADT merge or
/// link): every Patient item is linked to the first (the surviving record of a merge).
async fn linkages(store: &dyn Store, conn: &ConnectionRef) -> Result<Vec<SourceLink>, EngineError> {
    let mut out = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_resources(conn, "Linkage", after.as_deref(), PAGE, false)
            .await?;
        let Some(last) = page.last() else { break };
        after = Some(last.logical_id.clone());
        let full = page.len() == PAGE as usize;
        for r in page {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&r.bytes) else {
                continue;
            };
            if v.get("active").and_then(serde_json::Value::as_bool) == Some(false) {
                continue;
            }
            let items: Vec<String> = v
                .get("item")
                .and_then(serde_json::Value::as_array)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .filter_map(|i| i.get("resource")?.get("reference")?.as_str())
                .filter_map(|reference| link_target(&conn.connection, reference))
                .collect();
            if let Some((first, rest)) = items.split_first() {
                for other in rest.iter().filter(|o| *o != first) {
                    out.push((
                        first.clone(),
                        other.clone(),
                        format!("HL7 Linkage/{} of {}", r.logical_id, conn.connection),
                    ));
                }
            }
        }
        if !full {
            break;
        }
    }
    Ok(out)
}

/// The organization's identity, rebuilt from the store: every Patient restored or queued for
/// matching, ready for a round.
struct Round {
    identity: Identity<StoreIdentity>,
    /// New or changed records, to upsert.
    changed: Vec<Loaded>,
    links: Vec<SourceLink>,
    known_forced: HashSet<(String, String, String)>,
    model: Option<StoredMatchModel>,
    records: usize,
    unreadable: usize,
    trained: bool,
}

async fn open_round(store: &dyn Store, organization: &str) -> Result<Round, EngineError> {
    let state = store.identity_state(organization).await?;
    let (patients, links, unreadable) = load_patients(store, organization).await?;
    let stored_model: Option<Model> = state
        .model
        .as_ref()
        .and_then(|m| serde_json::from_str(&m.model).ok());
    let trained_on = state.model.as_ref().map_or(0, |m| m.records as usize);
    let n = patients.len();
    let retrain = n >= TRAIN_AT && (stored_model.is_none() || n >= trained_on.saturating_mul(2));
    let mut new_model = None;
    let model = if retrain {
        let mut m = Matcher::new(Settings::default());
        for p in &patients {
            m.insert(&p.facts.record).map_err(identity_error)?;
        }
        m.train();
        let model = m.model().clone();
        new_model = Some(StoredMatchModel {
            model: serde_json::to_string(&model).map_err(|e| identity_error(e.into()))?,
            records: n as u64,
            trained_at: Utc::now(),
        });
        model
    } else {
        stored_model.unwrap_or_else(|| Matcher::new(Settings::default()).model().clone())
    };
    let known_forced = state
        .forced
        .iter()
        .map(|f| (f.a.clone(), f.b.clone(), f.source.clone()))
        .collect();
    let adapter = StoreIdentity::from_state(&state);
    let mut identity = Identity::new(Matcher::with_model(Settings::default(), model), adapter)
        .map_err(identity_error)?;
    let stored: HashMap<&str, (i64, &str)> = state
        .records
        .iter()
        .map(|r| (r.record.as_str(), (r.person, r.content_hash.as_str())))
        .collect();
    let mut changed = Vec::new();
    for p in patients {
        match stored.get(p.facts.record.id.as_str()) {
            Some((person, hash)) if *hash == p.hash => identity
                .restore(&p.facts.record, PersonId((*person).max(0) as u64))
                .map_err(identity_error)?,
            _ => changed.push(p),
        }
    }
    Ok(Round {
        identity,
        changed,
        links,
        known_forced,
        model: new_model.clone(),
        records: n,
        unreadable,
        trained: new_model.is_some(),
    })
}

fn identity_error(e: MatchError) -> EngineError {
    EngineError::Identity(Box::new(e))
}

fn review_pair(e: &Evidence, at: DateTime<Utc>) -> Result<ReviewPair, EngineError> {
    let (a, b) = if e.a <= e.b {
        (e.a.clone(), e.b.clone())
    } else {
        (e.b.clone(), e.a.clone())
    };
    Ok(ReviewPair {
        a,
        b,
        weight: e.total,
        evidence: serde_json::to_string(e).map_err(|e| identity_error(e.into()))?,
        queued_at: at,
    })
}

async fn summarize(
    store: &dyn Store,
    organization: &str,
    report: &mut IdentityReport,
) -> Result<(), EngineError> {
    let mut after = None;
    loop {
        let page = store.list_persons(organization, after, 1_000).await?;
        let Some(last) = page.last() else { break };
        after = Some(last.person);
        for p in &page {
            report.persons += 1;
            let sources: BTreeSet<&str> = p
                .records
                .iter()
                .map(|r| r.split('/').next().unwrap_or(""))
                .collect();
            if sources.len() > 1 {
                report.across_sources += 1;
            }
        }
        if page.len() < 1_000 {
            break;
        }
    }
    report.awaiting_review = store.review_queue(organization, u32::MAX).await?.len();
    Ok(())
}

/// A reviewer's decision to apply in a round.
struct Decision<'a> {
    a: &'a str,
    b: &'a str,
    link: bool,
    reviewer: &'a str,
    note: Option<&'a str>,
}

/// Plays a round: the changed records upserted, the new forced links, then the decision if
/// any; returns what to write and what it did.
fn play(
    round: &mut Round,
    decision: Option<&Decision<'_>>,
) -> Result<(IdentityUpdate, IdentityReport), EngineError> {
    let now = Utc::now();
    let mut report = IdentityReport {
        records: round.records,
        matched: round.changed.len(),
        unreadable: round.unreadable,
        trained: round.trained,
        ..IdentityReport::default()
    };
    let mut cleared = Vec::new();
    for p in &round.changed {
        // the hash first: the record's person is written with the bytes it was matched on
        round
            .identity
            .store_mut()
            .hashes
            .insert(p.facts.record.id.clone(), p.hash.clone());
        round
            .identity
            .upsert(&p.facts.record)
            .map_err(identity_error)?;
        cleared.push(p.facts.record.id.clone());
    }
    for (a, b, source) in &round.links {
        let (x, y) = if a <= b { (a, b) } else { (b, a) };
        let key = (x.clone(), y.clone(), source.clone());
        if round.known_forced.contains(&key)
            || round
                .known_forced
                .contains(&(a.clone(), b.clone(), source.clone()))
        {
            continue;
        }
        round.known_forced.insert(key);
        round
            .identity
            .force_link(x, y, source, now)
            .map_err(identity_error)?;
        report.forced += 1;
    }
    if let Some(d) = decision {
        let verdict = if d.link {
            Verdict::Link
        } else {
            Verdict::Unlink
        };
        round
            .identity
            .decide(d.a, d.b, verdict, d.reviewer, now)
            .map_err(identity_error)?;
    }
    let changed: HashSet<&str> = cleared.iter().map(String::as_str).collect();
    let review = round
        .identity
        .review_queue()
        .iter()
        .filter(|i| changed.contains(i.a.as_str()) || changed.contains(i.b.as_str()))
        .map(|i| review_pair(&i.evidence, now))
        .collect::<Result<Vec<_>, _>>()?;
    // every record matched now is written with the hash it was matched on
    let adapter = round.identity.store_mut();
    for r in &cleared {
        if let Some(person) = adapter.persons.get(r).copied() {
            adapter
                .records
                .insert(r.clone(), to_i64(person).map_err(identity_error)?);
        }
    }
    let mut update = adapter.take_update();
    if let (Some(d), Some(last)) = (decision, update.decisions.last_mut()) {
        last.note = d.note.map(str::to_string);
    }
    update.review_cleared_for = cleared;
    update.review = review;
    update.model = round.model.take();
    report.events = update.events.len();
    Ok((update, report))
}

/// One round at a time per organization in this process: syncs of two connections of one
/// organization that end together would otherwise hand out the same person ids (the second
/// round's commit would fail and wait for the next round). Across processes the store refuses
/// the second commit the same way.
async fn organization_lock(organization: &str) -> tokio::sync::OwnedMutexGuard<()> {
    static LOCKS: std::sync::OnceLock<
        std::sync::Mutex<HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>>>,
    > = std::sync::OnceLock::new();
    let lock = {
        let mut map = LOCKS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        std::sync::Arc::clone(map.entry(organization.to_string()).or_default())
    };
    lock.lock_owned().await
}

/// One round of identity for an organization: its new or changed Patients matched against
/// their blocks, new forced links from its sources, all written in one transaction. A round
/// that fails leaves the store as it was; the next one matches what this one did not.
pub async fn update_identity(
    store: &dyn Store,
    organization: &str,
) -> Result<IdentityReport, EngineError> {
    let _one_at_a_time = organization_lock(organization).await;
    let mut round = open_round(store, organization).await?;
    let (update, mut report) = play(&mut round, None)?;
    store.apply_identity(organization, &update).await?;
    summarize(store, organization, &mut report).await?;
    Ok(report)
}

/// A reviewer's decision on a pair (`link` or not), applied in a round of its own and written
/// with who and when; re-matching never overturns it. Returns the persons of the two records
/// afterwards.
pub async fn decide_pair(
    store: &dyn Store,
    organization: &str,
    a: &str,
    b: &str,
    link: bool,
    reviewer: &str,
    note: Option<&str>,
) -> Result<(Option<i64>, Option<i64>), EngineError> {
    let _one_at_a_time = organization_lock(organization).await;
    let mut round = open_round(store, organization).await?;
    for r in [a, b] {
        if round.identity.matcher().number(r).is_none() {
            return Err(identity_error(MatchError::UnknownRecord(r.to_string())));
        }
    }
    let decision = Decision {
        a,
        b,
        link,
        reviewer,
        note,
    };
    let (update, _) = play(&mut round, Some(&decision))?;
    store.apply_identity(organization, &update).await?;
    let person = |r: &str| {
        round
            .identity
            .person(r)
            .and_then(|p| i64::try_from(p.0).ok())
    };
    Ok((person(a), person(b)))
}

/// The evidence of two records of the organization (each comparison's weight and the total),
/// with the organization's model. Writes nothing.
pub async fn explain_pair(
    store: &dyn Store,
    organization: &str,
    a: &str,
    b: &str,
) -> Result<Evidence, EngineError> {
    let mut round = open_round(store, organization).await?;
    for p in &round.changed {
        round
            .identity
            .upsert(&p.facts.record)
            .map_err(identity_error)?;
    }
    round.identity.explain(a, b).map_err(identity_error)
}
