//! Identity: records grouped into persons whose ids stay the same. Records linked at or above
//! the link threshold are one person; a new record joins the person it links to; when records
//! of two persons link, the earliest person id is kept and the merge is an event with its
//! evidence; when a reviewer unlinks records (or a changed record no longer links) the person
//! splits, again as an event. Reviewer decisions and hard evidence from sources (HL7 merge and
//! link events, FHIR `Patient.link`) are constraints that re-matching never overturns.
//! Persistence is the [`IdentityStore`] trait; [`MemoryIdentityStore`] keeps it in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::MatchError;
use crate::explain::Evidence;
use crate::matcher::Matcher;
use crate::model::Decision;
use crate::record::Record;

/// A person id: numbers are handed out in order, so the smaller is the earlier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct PersonId(pub u64);

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "person-{:06}", self.0)
    }
}

/// What a reviewer decided about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Verdict {
    Link,
    Unlink,
}

/// A reviewer's decision, with who and when (the audit).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReviewerDecision {
    pub a: String,
    pub b: String,
    pub verdict: Verdict,
    pub reviewer: String,
    pub at: DateTime<Utc>,
}

/// Hard evidence from a source that two records are one person: an HL7 merge or link event
/// (ADT A40, A34, A24, A37) or a FHIR `Patient.link`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ForcedLink {
    pub a: String,
    pub b: String,
    /// e.g. `HL7 ADT^A40 control id 123`, `FHIR Patient.link replaced-by`.
    pub source: String,
    pub at: DateTime<Utc>,
}

/// Why two records are (or were) linked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum LinkReason {
    Matched(Box<Evidence>),
    Reviewer(ReviewerDecision),
    Forced(ForcedLink),
}

/// One link with its reason.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinkEvidence {
    pub a: String,
    pub b: String,
    pub reason: LinkReason,
}

/// What happened to persons. Nothing changes silently.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum IdentityEvent {
    /// A record that links to no one became a new person.
    Created { person: PersonId, record: String },
    /// A record joined an existing person.
    Joined {
        person: PersonId,
        record: String,
        evidence: Vec<LinkEvidence>,
    },
    /// Persons became one; the earliest id is kept.
    Merged {
        kept: PersonId,
        absorbed: Vec<PersonId>,
        evidence: Vec<LinkEvidence>,
    },
    /// A person became several; `from` stays with most of its records.
    Split {
        from: PersonId,
        into: Vec<PersonId>,
        reason: String,
        moved: Vec<String>,
    },
}

/// Where identity is kept. Implementations must hand out person ids in increasing order.
pub trait IdentityStore {
    fn allocate_person(&mut self) -> Result<PersonId, MatchError>;
    fn person_of(&self, record: &str) -> Result<Option<PersonId>, MatchError>;
    fn set_person(&mut self, record: &str, person: PersonId) -> Result<(), MatchError>;
    fn append_event(&mut self, event: &IdentityEvent) -> Result<(), MatchError>;
    fn events(&self) -> Result<Vec<IdentityEvent>, MatchError>;
    fn save_decision(&mut self, decision: &ReviewerDecision) -> Result<(), MatchError>;
    fn decisions(&self) -> Result<Vec<ReviewerDecision>, MatchError>;
    fn save_forced(&mut self, link: &ForcedLink) -> Result<(), MatchError>;
    fn forced(&self) -> Result<Vec<ForcedLink>, MatchError>;
}

/// An [`IdentityStore`] in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryIdentityStore {
    next: u64,
    persons: HashMap<String, PersonId>,
    events: Vec<IdentityEvent>,
    decisions: Vec<ReviewerDecision>,
    forced: Vec<ForcedLink>,
}

impl IdentityStore for MemoryIdentityStore {
    fn allocate_person(&mut self) -> Result<PersonId, MatchError> {
        self.next += 1;
        Ok(PersonId(self.next))
    }
    fn person_of(&self, record: &str) -> Result<Option<PersonId>, MatchError> {
        Ok(self.persons.get(record).copied())
    }
    fn set_person(&mut self, record: &str, person: PersonId) -> Result<(), MatchError> {
        self.persons.insert(record.to_string(), person);
        Ok(())
    }
    fn append_event(&mut self, event: &IdentityEvent) -> Result<(), MatchError> {
        self.events.push(event.clone());
        Ok(())
    }
    fn events(&self) -> Result<Vec<IdentityEvent>, MatchError> {
        Ok(self.events.clone())
    }
    fn save_decision(&mut self, decision: &ReviewerDecision) -> Result<(), MatchError> {
        self.decisions.push(decision.clone());
        Ok(())
    }
    fn decisions(&self) -> Result<Vec<ReviewerDecision>, MatchError> {
        Ok(self.decisions.clone())
    }
    fn save_forced(&mut self, link: &ForcedLink) -> Result<(), MatchError> {
        self.forced.push(link.clone());
        Ok(())
    }
    fn forced(&self) -> Result<Vec<ForcedLink>, MatchError> {
        Ok(self.forced.clone())
    }
}

fn key(a: &str, b: &str) -> (String, String) {
    if a <= b {
        (a.to_string(), b.to_string())
    } else {
        (b.to_string(), a.to_string())
    }
}

/// A pair waiting for a reviewer.
#[derive(Debug, Clone, PartialEq)]
pub struct ReviewItem {
    pub a: String,
    pub b: String,
    pub evidence: Evidence,
}

/// Persons over a matcher and a store.
pub struct Identity<S: IdentityStore> {
    matcher: Matcher,
    store: S,
    /// Links by pair: matched above the threshold, reviewer links and forced links.
    links: HashMap<(String, String), LinkReason>,
    adjacent: HashMap<String, BTreeSet<String>>,
    /// Pairs a reviewer unlinked: never in one person.
    cannot: HashMap<String, BTreeSet<String>>,
    review: BTreeMap<(String, String), Evidence>,
    members: HashMap<PersonId, BTreeSet<String>>,
    person_of: HashMap<String, PersonId>,
    /// Records put back with [`Identity::restore`] whose scored links are not in memory yet.
    restored: HashSet<String>,
}

impl<S: IdentityStore> Identity<S> {
    /// Identity over a (trained) matcher; reviewer decisions and forced links already in the
    /// store are applied.
    pub fn new(matcher: Matcher, store: S) -> Result<Identity<S>, MatchError> {
        let mut id = Identity {
            matcher,
            store,
            links: HashMap::new(),
            adjacent: HashMap::new(),
            cannot: HashMap::new(),
            review: BTreeMap::new(),
            members: HashMap::new(),
            person_of: HashMap::new(),
            restored: HashSet::new(),
        };
        for d in id.store.decisions()? {
            id.apply_decision(&d);
        }
        for f in id.store.forced()? {
            id.add_link(&f.a, &f.b, LinkReason::Forced(f.clone()));
        }
        Ok(id)
    }

    pub fn matcher(&self) -> &Matcher {
        &self.matcher
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, to add what the caller keeps beside identity (an adapter's bookkeeping).
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// The person a record belongs to.
    pub fn person(&self, record: &str) -> Option<PersonId> {
        self.person_of.get(record).copied()
    }

    /// The records of a person.
    pub fn records_of(&self, person: PersonId) -> Vec<String> {
        self.members
            .get(&person)
            .map(|m| m.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Number of persons.
    pub fn persons(&self) -> usize {
        self.members.len()
    }

    /// Pairs between the thresholds, with their evidence.
    pub fn review_queue(&self) -> Vec<ReviewItem> {
        self.review
            .iter()
            .map(|((a, b), e)| ReviewItem {
                a: a.clone(),
                b: b.clone(),
                evidence: e.clone(),
            })
            .collect()
    }

    /// The evidence of two records.
    pub fn explain(&self, a: &str, b: &str) -> Result<Evidence, MatchError> {
        self.matcher.explain(a, b)
    }

    fn add_link(&mut self, a: &str, b: &str, reason: LinkReason) {
        let k = key(a, b);
        // a reviewer's or a source's word is never replaced by a score
        if let Some(existing) = self.links.get(&k) {
            if matches!(reason, LinkReason::Matched(_))
                && !matches!(existing, LinkReason::Matched(_))
            {
                return;
            }
        }
        self.links.insert(k, reason);
        self.adjacent
            .entry(a.to_string())
            .or_default()
            .insert(b.to_string());
        self.adjacent
            .entry(b.to_string())
            .or_default()
            .insert(a.to_string());
    }

    fn remove_link(&mut self, a: &str, b: &str) {
        self.links.remove(&key(a, b));
        if let Some(s) = self.adjacent.get_mut(a) {
            s.remove(b);
        }
        if let Some(s) = self.adjacent.get_mut(b) {
            s.remove(a);
        }
    }

    fn cannot_link(&self, a: &str, b: &str) -> bool {
        self.cannot.get(a).is_some_and(|s| s.contains(b))
    }

    fn apply_decision(&mut self, d: &ReviewerDecision) {
        self.review.remove(&key(&d.a, &d.b));
        match d.verdict {
            Verdict::Link => {
                if let Some(s) = self.cannot.get_mut(&d.a) {
                    s.remove(&d.b);
                }
                if let Some(s) = self.cannot.get_mut(&d.b) {
                    s.remove(&d.a);
                }
                self.add_link(&d.a, &d.b, LinkReason::Reviewer(d.clone()));
            }
            Verdict::Unlink => {
                self.remove_link(&d.a, &d.b);
                self.cannot
                    .entry(d.a.clone())
                    .or_default()
                    .insert(d.b.clone());
                self.cannot
                    .entry(d.b.clone())
                    .or_default()
                    .insert(d.a.clone());
            }
        }
    }

    fn decided(&self, a: &str, b: &str) -> bool {
        self.cannot_link(a, b)
            || self
                .links
                .get(&key(a, b))
                .is_some_and(|r| !matches!(r, LinkReason::Matched(_)))
    }

    /// Puts back a record matched in an earlier session, with the person it was given then,
    /// without comparing it now: a process that keeps identity in a store restores every
    /// record and upserts only the new or changed ones. A restored record's scored links are
    /// worked out again (against its blocks only) when its person is next touched, so a
    /// person is never split because its links were not kept in memory.
    pub fn restore(&mut self, record: &Record, person: PersonId) -> Result<(), MatchError> {
        self.matcher.insert(record)?;
        if let Some(old) = self.person_of.insert(record.id.clone(), person) {
            if old != person {
                if let Some(m) = self.members.get_mut(&old) {
                    m.remove(&record.id);
                    if m.is_empty() {
                        self.members.remove(&old);
                    }
                }
            }
        }
        self.members
            .entry(person)
            .or_default()
            .insert(record.id.clone());
        self.restored.insert(record.id.clone());
        Ok(())
    }

    /// Scores the restored records of `scope` against their blocks again, keeping the links
    /// above the link threshold that no decision forbids (the review queue is left alone: it
    /// was kept with the records).
    fn hydrate(&mut self, scope: &BTreeSet<String>) {
        let todo: Vec<String> = scope
            .iter()
            .filter(|r| self.restored.contains(*r))
            .cloned()
            .collect();
        for r in todo {
            self.restored.remove(&r);
            let Some(n) = self.matcher.number(&r) else {
                continue;
            };
            for p in self.matcher.match_number(n) {
                if p.decision != Decision::Link {
                    continue;
                }
                let other = self.matcher.id(p.b).to_string();
                if self.decided(&r, &other) {
                    continue;
                }
                let e = self.matcher.evidence_numbers(p.a, p.b);
                self.add_link(&r, &other, LinkReason::Matched(Box::new(e)));
            }
        }
    }

    /// Adds a new or changed record: compares it with its blocks, links it above the link
    /// threshold, queues pairs between the thresholds, and returns what happened to persons.
    pub fn upsert(&mut self, record: &Record) -> Result<Vec<IdentityEvent>, MatchError> {
        let id = record.id.clone();
        // scored now, against its new content
        self.restored.remove(&id);
        let mut touched: BTreeSet<String> = BTreeSet::new();
        touched.insert(id.clone());
        // the record's earlier scores no longer hold
        let old: Vec<String> = self
            .adjacent
            .get(&id)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        for o in &old {
            if matches!(self.links.get(&key(&id, o)), Some(LinkReason::Matched(_))) {
                self.remove_link(&id, o);
            }
            touched.insert(o.clone());
        }
        self.review.retain(|(a, b), _| a != &id && b != &id);
        if !self.person_of.contains_key(&id) {
            if let Some(p) = self.store.person_of(&id)? {
                self.person_of.insert(id.clone(), p);
                self.members.entry(p).or_default().insert(id.clone());
            }
        }
        let pairs = self.matcher.add_and_match(record)?;
        for p in pairs {
            let other = self.matcher.id(p.b).to_string();
            if self.decided(&id, &other) {
                touched.insert(other);
                continue;
            }
            match p.decision {
                Decision::Link => {
                    let e = self.matcher.evidence_numbers(p.a, p.b);
                    self.add_link(&id, &other, LinkReason::Matched(Box::new(e)));
                    touched.insert(other);
                }
                Decision::Review => {
                    let e = self.matcher.evidence_numbers(p.a, p.b);
                    self.review.insert(key(&id, &other), e);
                }
                Decision::NoLink => {}
            }
        }
        // forced or reviewer links to this record made before it arrived
        if let Some(adj) = self.adjacent.get(&id) {
            touched.extend(adj.iter().cloned());
        }
        self.recluster(&touched, &format!("record {id} changed"))
    }

    /// Records a reviewer's decision (kept in the store, never overturned by re-matching) and
    /// applies it.
    pub fn decide(
        &mut self,
        a: &str,
        b: &str,
        verdict: Verdict,
        reviewer: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<IdentityEvent>, MatchError> {
        let d = ReviewerDecision {
            a: a.to_string(),
            b: b.to_string(),
            verdict,
            reviewer: reviewer.to_string(),
            at,
        };
        self.store.save_decision(&d)?;
        self.apply_decision(&d);
        let touched: BTreeSet<String> = [a.to_string(), b.to_string()].into_iter().collect();
        let reason = match verdict {
            Verdict::Link => format!("{reviewer} linked {a} and {b} at {at}"),
            Verdict::Unlink => format!("{reviewer} unlinked {a} and {b} at {at}"),
        };
        self.recluster(&touched, &reason)
    }

    /// Hard evidence from a source that two records are one person.
    pub fn force_link(
        &mut self,
        a: &str,
        b: &str,
        source: &str,
        at: DateTime<Utc>,
    ) -> Result<Vec<IdentityEvent>, MatchError> {
        let f = ForcedLink {
            a: a.to_string(),
            b: b.to_string(),
            source: source.to_string(),
            at,
        };
        self.store.save_forced(&f)?;
        self.add_link(a, b, LinkReason::Forced(f));
        let touched: BTreeSet<String> = [a.to_string(), b.to_string()].into_iter().collect();
        self.recluster(&touched, &format!("{source} links {a} and {b}"))
    }

    /// Scores every candidate pair again (after a model change) and regroups everyone;
    /// reviewer decisions and forced links stay as they are.
    pub fn rematch_all(&mut self) -> Result<Vec<IdentityEvent>, MatchError> {
        let matched: Vec<(String, String)> = self
            .links
            .iter()
            .filter(|(_, r)| matches!(r, LinkReason::Matched(_)))
            .map(|(k, _)| k.clone())
            .collect();
        for (a, b) in matched {
            self.remove_link(&a, &b);
        }
        self.review.clear();
        let (pairs, _) = self
            .matcher
            .score_all(self.matcher.model().thresholds.review);
        for p in pairs {
            let (a, b) = (
                self.matcher.id(p.a).to_string(),
                self.matcher.id(p.b).to_string(),
            );
            if self.decided(&a, &b) {
                continue;
            }
            let e = self.matcher.evidence_numbers(p.a, p.b);
            match p.decision {
                Decision::Link => self.add_link(&a, &b, LinkReason::Matched(Box::new(e))),
                Decision::Review => {
                    self.review.insert(key(&a, &b), e);
                }
                Decision::NoLink => {}
            }
        }
        self.restored.clear();
        let all: BTreeSet<String> = self.person_of.keys().cloned().collect();
        self.recluster(&all, "re-matching")
    }

    /// Regroups the persons of the touched records and records what changed.
    fn recluster(
        &mut self,
        touched: &BTreeSet<String>,
        reason: &str,
    ) -> Result<Vec<IdentityEvent>, MatchError> {
        // every record of every person involved, plus the touched records that exist
        let mut scope: BTreeSet<String> = BTreeSet::new();
        for r in touched {
            if let Some(p) = self.person_of.get(r) {
                scope.extend(self.members.get(p).into_iter().flatten().cloned());
            }
            if self.matcher.number(r).is_some() {
                scope.insert(r.clone());
            }
        }
        self.hydrate(&scope);
        let list: Vec<String> = scope.iter().cloned().collect();
        let pos: HashMap<&str, usize> = list
            .iter()
            .enumerate()
            .map(|(i, r)| (r.as_str(), i))
            .collect();
        // edges inside the scope: source and reviewer links first, then scores, strongest first
        let mut edges: Vec<(u8, f64, usize, usize)> = Vec::new();
        for (i, r) in list.iter().enumerate() {
            for o in self.adjacent.get(r).into_iter().flatten() {
                let Some(&j) = pos.get(o.as_str()) else {
                    continue;
                };
                if j <= i {
                    continue;
                }
                let (rank, w) = match self.links.get(&key(r, o)) {
                    Some(LinkReason::Matched(e)) => (1, e.total),
                    Some(_) => (0, f64::INFINITY),
                    None => continue,
                };
                edges.push((rank, w, i, j));
            }
        }
        edges.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(b.1.total_cmp(&a.1))
                .then(a.2.cmp(&b.2))
                .then(a.3.cmp(&b.3))
        });
        let mut comp: Vec<usize> = (0..list.len()).collect();
        let mut groups: Vec<Vec<usize>> = (0..list.len()).map(|i| vec![i]).collect();
        let mut used: Vec<(usize, usize)> = Vec::new();
        for (_, _, i, j) in edges {
            let (ci, cj) = (comp[i], comp[j]);
            if ci == cj {
                used.push((i, j));
                continue;
            }
            let blocked = groups[ci].iter().any(|&x| {
                groups[cj]
                    .iter()
                    .any(|&y| self.cannot_link(&list[x], &list[y]))
            });
            if blocked {
                continue;
            }
            let (keep, gone) = if groups[ci].len() >= groups[cj].len() {
                (ci, cj)
            } else {
                (cj, ci)
            };
            let moved = std::mem::take(&mut groups[gone]);
            for &x in &moved {
                comp[x] = keep;
            }
            groups[keep].extend(moved);
            used.push((i, j));
        }
        let components: Vec<Vec<usize>> = groups.into_iter().filter(|g| !g.is_empty()).collect();

        // which component keeps each old person id: the one with most of its records, then
        // the one with its smallest record id
        let mut claims: BTreeMap<PersonId, (usize, usize, String)> = BTreeMap::new();
        for (c, members) in components.iter().enumerate() {
            let mut count: BTreeMap<PersonId, (usize, String)> = BTreeMap::new();
            for &x in members {
                if let Some(p) = self.person_of.get(&list[x]) {
                    let e = count.entry(*p).or_insert((0, list[x].clone()));
                    e.0 += 1;
                    if list[x] < e.1 {
                        e.1 = list[x].clone();
                    }
                }
            }
            for (p, (n, first)) in count {
                let better = match claims.get(&p) {
                    None => true,
                    Some((_, bn, bf)) => n > *bn || (n == *bn && first < *bf),
                };
                if better {
                    claims.insert(p, (c, n, first));
                }
            }
        }
        let mut events = Vec::new();
        let mut splits: BTreeMap<PersonId, (Vec<PersonId>, Vec<String>)> = BTreeMap::new();
        for (c, members) in components.iter().enumerate() {
            let won: Vec<PersonId> = claims
                .iter()
                .filter(|(_, v)| v.0 == c)
                .map(|(p, _)| *p)
                .collect();
            let records: Vec<&String> = members.iter().map(|&x| &list[x]).collect();
            let person = match won.first() {
                Some(p) => *p,
                None => self.store.allocate_person()?,
            };
            // evidence: the links of this component that cross old persons (or reach new records)
            let in_comp: HashSet<usize> = members.iter().copied().collect();
            let crossing = |x: usize, y: usize, this: &Self| {
                this.person_of.get(&list[x]) != this.person_of.get(&list[y])
            };
            let evidence: Vec<LinkEvidence> = used
                .iter()
                .filter(|(i, j)| {
                    in_comp.contains(i) && in_comp.contains(j) && crossing(*i, *j, self)
                })
                .filter_map(|(i, j)| {
                    self.links
                        .get(&key(&list[*i], &list[*j]))
                        .map(|r| LinkEvidence {
                            a: list[*i].clone(),
                            b: list[*j].clone(),
                            reason: r.clone(),
                        })
                })
                .collect();
            if won.len() > 1 {
                events.push(IdentityEvent::Merged {
                    kept: person,
                    absorbed: won[1..].to_vec(),
                    evidence: evidence.clone(),
                });
            }
            for r in &records {
                match self.person_of.get(*r) {
                    None if won.is_empty() && records.len() == 1 => {
                        events.push(IdentityEvent::Created {
                            person,
                            record: (*r).clone(),
                        });
                    }
                    None => {
                        let ev: Vec<LinkEvidence> = evidence
                            .iter()
                            .filter(|e| &e.a == *r || &e.b == *r)
                            .cloned()
                            .collect();
                        events.push(IdentityEvent::Joined {
                            person,
                            record: (*r).clone(),
                            evidence: ev,
                        });
                    }
                    Some(old) if *old != person && !won.contains(old) => {
                        let s = splits.entry(*old).or_default();
                        if !s.0.contains(&person) {
                            s.0.push(person);
                        }
                        s.1.push((*r).clone());
                    }
                    _ => {}
                }
            }
            for r in records {
                if let Some(old) = self.person_of.insert(r.clone(), person) {
                    if old != person {
                        if let Some(m) = self.members.get_mut(&old) {
                            m.remove(r);
                            if m.is_empty() {
                                self.members.remove(&old);
                            }
                        }
                    }
                }
                self.members.entry(person).or_default().insert(r.clone());
                self.store.set_person(r, person)?;
            }
        }
        for (from, (into, moved)) in splits {
            events.push(IdentityEvent::Split {
                from,
                into,
                reason: reason.to_string(),
                moved,
            });
        }
        for e in &events {
            self.store.append_event(e)?;
        }
        Ok(events)
    }
}
