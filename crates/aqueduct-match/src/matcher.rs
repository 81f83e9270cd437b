//! The matcher: prepared records, the blocking index, term frequencies and the model. Records
//! are added one at a time (a changed record replaces its earlier version); a new record is
//! compared with the records of its blocks only.

use std::collections::HashMap;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

use crate::block::{BlockIndex, BlockRule, BlockStats, RuleStats};
use crate::compare::{FIELDS, Field, NF, Prepared, Slot, compare, level};
use crate::error::MatchError;
use crate::explain::{Evidence, Term};
use crate::model::{Decision, Model, Patterns, probability};
use crate::record::Record;

/// Which pairs count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PairScope {
    /// Every pair (deduplication, and linking across sources that also hold duplicates).
    All,
    /// Only pairs of records from different sources (linking two clean lists).
    AcrossSources,
}

/// How the matcher blocks, trains and decides.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Settings {
    pub rules: Vec<BlockRule>,
    /// A block with more records than this is not searched (it would compare everyone with
    /// everyone); such blocks are counted in the statistics.
    pub max_block: u32,
    /// The same for broad rules ([`BlockRule::is_broad`]).
    pub max_broad_block: u32,
    /// The same for the typo-tolerant identifier keys: half an identifier singles out a
    /// person only while few records share it.
    pub max_typo_block: u32,
    pub scope: PairScope,
    /// Random pairs drawn to estimate u; 0 keeps the u that EM estimates on candidate pairs.
    pub random_pairs: usize,
    pub em_max_iterations: usize,
    /// Train on the candidate pairs of every n-th record only (1 = all).
    pub train_every_nth: usize,
    pub seed: u64,
    /// Rules that keep a pair out of automatic linking (twins, parent and child); copied into
    /// the model when the matcher is made.
    pub caps: Vec<crate::model::Cap>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            rules: BlockRule::defaults(),
            max_block: 2_000,
            max_broad_block: 20,
            max_typo_block: 6,
            scope: PairScope::All,
            random_pairs: 50_000,
            em_max_iterations: 100,
            train_every_nth: 1,
            seed: 20,
            caps: crate::model::default_caps(),
        }
    }
}

/// A scored pair, by internal record numbers (see [`Matcher::id`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ScoredPair {
    pub a: u32,
    pub b: u32,
    pub weight: f64,
    pub decision: Decision,
}

/// What training did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainReport {
    pub candidate_pairs: u64,
    pub random_pairs: u64,
    pub em_iterations: usize,
    pub em_converged: bool,
    pub lambda: f64,
    pub prior: f64,
}

pub struct Matcher {
    settings: Settings,
    model: Model,
    prepared: Vec<Prepared>,
    ids: Vec<Box<str>>,
    sources: Vec<u16>,
    source_names: Vec<String>,
    source_numbers: HashMap<String, u16>,
    by_id: HashMap<Box<str>, u32>,
    alive: Vec<bool>,
    live: usize,
    index: BlockIndex,
    tf_given: HashMap<Box<str>, u32>,
    tf_family: HashMap<Box<str>, u32>,
    tf_n: u64,
    weights: [[f64; crate::compare::MAX_LEVELS + 1]; NF],
    keys_scratch: Vec<u64>,
}

fn tf_add(map: &mut HashMap<Box<str>, u32>, v: &str, up: bool) {
    if v.is_empty() {
        return;
    }
    if up {
        if let Some(c) = map.get_mut(v) {
            *c += 1;
        } else {
            map.insert(v.into(), 1);
        }
    } else if let Some(c) = map.get_mut(v) {
        *c = c.saturating_sub(1);
    }
}

impl Matcher {
    pub fn new(settings: Settings) -> Matcher {
        let mut model = Model::initial();
        model.caps = settings.caps.clone();
        Matcher::with_model(settings, model)
    }

    /// A matcher with an already trained (e.g. stored) model.
    pub fn with_model(settings: Settings, model: Model) -> Matcher {
        let weights = model.weight_table();
        Matcher {
            settings,
            model,
            prepared: Vec::new(),
            ids: Vec::new(),
            sources: Vec::new(),
            source_names: Vec::new(),
            source_numbers: HashMap::new(),
            by_id: HashMap::new(),
            alive: Vec::new(),
            live: 0,
            index: BlockIndex::default(),
            tf_given: HashMap::new(),
            tf_family: HashMap::new(),
            tf_n: 0,
            weights,
            keys_scratch: Vec::new(),
        }
    }

    pub fn model(&self) -> &Model {
        &self.model
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Replaces the model (e.g. new thresholds).
    pub fn set_model(&mut self, model: Model) {
        self.weights = model.weight_table();
        self.model = model;
    }

    /// Number of current records.
    pub fn len(&self) -> usize {
        self.live
    }

    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// The caller's id of an internal record number.
    pub fn id(&self, n: u32) -> &str {
        self.ids.get(n as usize).map_or("", |s| s)
    }

    /// The current internal number of a record id.
    pub fn number(&self, id: &str) -> Option<u32> {
        self.by_id.get(id).copied()
    }

    pub fn source(&self, n: u32) -> &str {
        self.sources
            .get(n as usize)
            .and_then(|s| self.source_names.get(usize::from(*s)))
            .map_or("", |s| s)
    }

    /// Adds a record, or replaces the earlier version of the same id. Returns its internal
    /// number.
    pub fn insert(&mut self, record: &Record) -> Result<u32, MatchError> {
        if record.id.is_empty() {
            return Err(MatchError::EmptyId);
        }
        let n = u32::try_from(self.prepared.len()).map_err(|_| MatchError::TooManyRecords)?;
        if n == u32::MAX {
            return Err(MatchError::TooManyRecords);
        }
        if let Some(old) = self.by_id.get(record.id.as_str()).copied() {
            self.remove_number(old);
        }
        let p = Prepared::new(record);
        let source = match self.source_numbers.get(&record.source) {
            Some(s) => *s,
            None => {
                let s = u16::try_from(self.source_names.len())
                    .map_err(|_| MatchError::TooManySources)?;
                self.source_names.push(record.source.clone());
                self.source_numbers.insert(record.source.clone(), s);
                s
            }
        };
        tf_add(&mut self.tf_given, p.get(Slot::Given), true);
        tf_add(&mut self.tf_family, p.get(Slot::FamilyJoined), true);
        self.tf_n += 1;
        let mut keys = std::mem::take(&mut self.keys_scratch);
        for (i, rule) in self.settings.rules.iter().enumerate() {
            keys.clear();
            rule.keys(i, &p, &mut keys);
            keys.sort_unstable();
            keys.dedup();
            for k in &keys {
                self.index.add(*k, n);
            }
        }
        self.keys_scratch = keys;
        self.prepared.push(p);
        let id: Box<str> = record.id.as_str().into();
        self.by_id.insert(id.clone(), n);
        self.ids.push(id);
        self.sources.push(source);
        self.alive.push(true);
        self.live += 1;
        Ok(n)
    }

    /// Removes a record (it stays in the index but is never a candidate again).
    pub fn remove(&mut self, id: &str) -> bool {
        match self.by_id.remove(id) {
            Some(n) => {
                self.remove_number(n);
                true
            }
            None => false,
        }
    }

    fn remove_number(&mut self, n: u32) {
        let i = n as usize;
        if self.alive.get(i).copied().unwrap_or(false) {
            self.alive[i] = false;
            self.live -= 1;
            let p = &self.prepared[i];
            tf_add(&mut self.tf_given, p.get(Slot::Given), false);
            tf_add(&mut self.tf_family, p.get(Slot::FamilyJoined), false);
            self.tf_n = self.tf_n.saturating_sub(1);
        }
    }

    fn in_scope(&self, a: u32, b: u32) -> bool {
        a != b
            && self.alive[a as usize]
            && self.alive[b as usize]
            && (self.settings.scope == PairScope::All
                || self.sources[a as usize] != self.sources[b as usize])
    }

    /// Candidate records of record `n` with the rules that found each (bit mask), sorted.
    /// `earlier_only` keeps only smaller numbers, so that a pass over all records sees every
    /// pair once.
    pub(crate) fn candidates(
        &self,
        n: u32,
        earlier_only: bool,
        stats: Option<&mut BlockStats>,
        out: &mut Vec<(u32, u16)>,
    ) {
        out.clear();
        let p = &self.prepared[n as usize];
        let mut keys = Vec::new();
        let mut oversized = [0u64; 16];
        for (i, rule) in self.settings.rules.iter().enumerate().take(16) {
            keys.clear();
            rule.keys(i, p, &mut keys);
            keys.sort_unstable();
            keys.dedup();
            let cap = if *rule == BlockRule::IdentifierOneTypo {
                self.settings.max_typo_block
            } else if rule.is_broad() {
                self.settings.max_broad_block
            } else {
                self.settings.max_block
            };
            for k in &keys {
                if self.index.count(*k) > cap {
                    oversized[i] += 1;
                    continue;
                }
                self.index.for_each(*k, |m| {
                    if (!earlier_only || m < n) && self.in_scope(n, m) {
                        out.push((m, 1u16 << i));
                    }
                });
            }
        }
        out.sort_unstable_by_key(|c| c.0);
        out.dedup_by(|next, first| {
            if next.0 == first.0 {
                first.1 |= next.1;
                true
            } else {
                false
            }
        });
        if let Some(stats) = stats {
            for (i, skipped) in oversized.iter().enumerate().take(stats.rules.len()) {
                stats.rules[i].oversized_blocks_skipped += skipped;
            }
            for (_, mask) in out.iter() {
                stats.candidate_pairs += 1;
                for (i, r) in stats.rules.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 {
                        r.pairs += 1;
                        if *mask == 1 << i {
                            r.only_this_rule += 1;
                        }
                    }
                }
            }
        }
    }

    fn empty_stats(&self) -> BlockStats {
        BlockStats {
            rules: self
                .settings
                .rules
                .iter()
                .map(|r| RuleStats {
                    rule: r.name().to_string(),
                    ..RuleStats::default()
                })
                .collect(),
            candidate_pairs: 0,
        }
    }

    fn tf_adjustment(&self, field: Field, value: &str) -> f64 {
        if !self.model.term_frequency || self.tf_n < 50 {
            return 0.0;
        }
        let map = match field {
            Field::Given => &self.tf_given,
            Field::Family => &self.tf_family,
            _ => return 0.0,
        };
        let count = map.get(value).copied().unwrap_or(0);
        if count == 0 {
            return 0.0;
        }
        let tf = f64::from(count) / self.tf_n as f64;
        let c = field.index();
        let u_exact = self.model.u[c].first().copied().unwrap_or(tf);
        (u_exact / tf).log2().clamp(-8.0, 8.0)
    }

    fn capped(&self, g: &[u8; NF]) -> Option<(usize, Decision)> {
        if g[Field::Identifier.index()] == level::ID_SAME {
            return None;
        }
        self.model
            .caps
            .iter()
            .enumerate()
            .filter(|(_, c)| g[c.field.index()] == c.level)
            .map(|(i, c)| (i, c.at_most))
            .min_by_key(|(_, d)| *d)
    }

    /// Total weight and decision of a pair of internal numbers.
    pub fn score_numbers(&self, a: u32, b: u32) -> (f64, Decision, [u8; NF]) {
        let (pa, pb) = (&self.prepared[a as usize], &self.prepared[b as usize]);
        let g = compare(pa, pb);
        let mut w = self.model.prior_weight();
        for (c, &l) in g.iter().enumerate() {
            w += self.weights[c][usize::from(l)];
        }
        if g[0] == level::NAME_EXACT {
            w += self.tf_adjustment(Field::Given, pa.get(Slot::Given));
        }
        if g[1] == level::NAME_EXACT {
            w += self.tf_adjustment(Field::Family, pa.get(Slot::FamilyJoined));
        }
        let mut d = self.model.decide(w);
        if let Some((_, cap)) = self.capped(&g) {
            d = d.min(cap);
        }
        (w, d, g)
    }

    /// Every candidate pair once, scored; pairs below `min_weight` are left out.
    pub fn score_all(&self, min_weight: f64) -> (Vec<ScoredPair>, BlockStats) {
        let mut stats = self.empty_stats();
        let mut out = Vec::new();
        let mut cands = Vec::new();
        for n in 0..self.prepared.len() {
            let n = n as u32;
            if !self.alive[n as usize] {
                continue;
            }
            self.candidates(n, true, Some(&mut stats), &mut cands);
            for &(m, _) in &cands {
                let (weight, decision, _) = self.score_numbers(m, n);
                if weight >= min_weight {
                    out.push(ScoredPair {
                        a: m,
                        b: n,
                        weight,
                        decision,
                    });
                }
            }
        }
        (out, stats)
    }

    /// Blocking statistics without scoring.
    pub fn block_stats(&self) -> BlockStats {
        let mut stats = self.empty_stats();
        let mut cands = Vec::new();
        for n in 0..self.prepared.len() as u32 {
            if self.alive[n as usize] {
                self.candidates(n, true, Some(&mut stats), &mut cands);
            }
        }
        stats
    }

    /// Compares a record (already inserted) with the records of its blocks.
    pub fn match_number(&self, n: u32) -> Vec<ScoredPair> {
        let mut cands = Vec::new();
        self.candidates(n, false, None, &mut cands);
        cands
            .iter()
            .map(|&(m, _)| {
                let (weight, decision, _) = self.score_numbers(n, m);
                ScoredPair {
                    a: n,
                    b: m,
                    weight,
                    decision,
                }
            })
            .collect()
    }

    /// Adds (or replaces) a record and compares it with its blocks only.
    pub fn add_and_match(&mut self, record: &Record) -> Result<Vec<ScoredPair>, MatchError> {
        let n = self.insert(record)?;
        Ok(self.match_number(n))
    }

    fn possible_pairs(&self) -> f64 {
        let n = self.live as f64;
        match self.settings.scope {
            PairScope::All => n * (n - 1.0) / 2.0,
            PairScope::AcrossSources => {
                let mut per: HashMap<u16, f64> = HashMap::new();
                for (i, s) in self.sources.iter().enumerate() {
                    if self.alive[i] {
                        *per.entry(*s).or_insert(0.0) += 1.0;
                    }
                }
                let sq: f64 = per.values().map(|c| c * c).sum();
                (n * n - sq) / 2.0
            }
        }
    }

    /// Comparison vectors of random pairs in scope.
    fn random_patterns(&self, count: usize) -> Patterns {
        let mut pats = Patterns::default();
        let alive: Vec<u32> = (0..self.prepared.len() as u32)
            .filter(|n| self.alive[*n as usize])
            .collect();
        if alive.len() < 2 {
            return pats;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(self.settings.seed);
        let mut tries = 0usize;
        while pats.total < count as u64 && tries < count * 4 {
            tries += 1;
            let a = alive[rng.random_range(0..alive.len())];
            let b = alive[rng.random_range(0..alive.len())];
            if !self.in_scope(a, b) {
                continue;
            }
            pats.add(compare(
                &self.prepared[a as usize],
                &self.prepared[b as usize],
            ));
        }
        pats
    }

    /// Estimates the model from the records themselves: EM on the candidate pairs' comparison
    /// vectors (m, u and the share of matches), then u from random pairs when configured, and
    /// the prior from the number of matches EM found over all possible pairs.
    pub fn train(&mut self) -> TrainReport {
        let mut pats = Patterns::default();
        let mut cands = Vec::new();
        let every = self.settings.train_every_nth.max(1);
        for n in (0..self.prepared.len() as u32).step_by(every) {
            if !self.alive[n as usize] {
                continue;
            }
            self.candidates(n, every == 1, None, &mut cands);
            for &(m, _) in &cands {
                pats.add(compare(
                    &self.prepared[m as usize],
                    &self.prepared[n as usize],
                ));
            }
        }
        let random = self.random_patterns(self.settings.random_pairs);
        let mut model = self.model.clone();
        if random.total > 0 {
            model.set_u_from_random(&random);
        }
        model.train_em(&pats, false, self.settings.em_max_iterations);
        if random.total > 0 {
            model.set_u_from_random(&random);
        }
        // matches among candidates, scaled up when training saw a sample of records
        let sample_share = if every == 1 { 1.0 } else { 2.0 / every as f64 };
        let matches = model.lambda * pats.total as f64 / sample_share;
        let possible = self.possible_pairs().max(1.0);
        model.prior = (matches / possible).clamp(1e-12, 0.5);
        let report = TrainReport {
            candidate_pairs: pats.total,
            random_pairs: random.total,
            em_iterations: model.em_iterations,
            em_converged: model.em_converged,
            lambda: model.lambda,
            prior: model.prior,
        };
        self.set_model(model);
        report
    }

    /// Refines m with pairs a reviewer confirmed as the same person (ids of current records).
    pub fn refine_with_confirmed(&mut self, pairs: &[(&str, &str)], strength: f64) {
        let mut pats = Patterns::default();
        for (a, b) in pairs {
            if let (Some(x), Some(y)) = (self.number(a), self.number(b)) {
                pats.add(compare(
                    &self.prepared[x as usize],
                    &self.prepared[y as usize],
                ));
            }
        }
        let mut model = self.model.clone();
        model.refine_m_with_confirmed(&pats, strength);
        self.set_model(model);
    }

    /// The evidence of a pair of internal numbers: every comparison with its level and weight.
    pub fn evidence_numbers(&self, a: u32, b: u32) -> Evidence {
        let (pa, pb) = (&self.prepared[a as usize], &self.prepared[b as usize]);
        let (total, decision, g) = self.score_numbers(a, b);
        let terms = FIELDS
            .iter()
            .enumerate()
            .map(|(c, f)| {
                let l = g[c];
                let tf = match (f, l) {
                    (Field::Given, level::NAME_EXACT) => {
                        self.tf_adjustment(*f, pa.get(Slot::Given))
                    }
                    (Field::Family, level::NAME_EXACT) => {
                        self.tf_adjustment(*f, pa.get(Slot::FamilyJoined))
                    }
                    _ => 0.0,
                };
                let i = usize::from(l).saturating_sub(1);
                Term {
                    field: *f,
                    level: l,
                    label: f.level_label(l).to_string(),
                    a_value: pa.value(*f),
                    b_value: pb.value(*f),
                    m: if l == 0 {
                        None
                    } else {
                        self.model.m[c].get(i).copied()
                    },
                    u: if l == 0 {
                        None
                    } else {
                        self.model.u[c].get(i).copied()
                    },
                    weight: self.weights[c][usize::from(l)],
                    tf_adjustment: tf,
                }
            })
            .collect();
        let capped_by = self
            .capped(&g)
            .and_then(|(i, _)| self.model.caps.get(i))
            .map(|c| {
                format!(
                    "{} is '{}': at most {} unless an identifier agrees",
                    c.field.name(),
                    c.field.level_label(c.level),
                    c.at_most.as_str()
                )
            });
        Evidence {
            a: self.id(a).to_string(),
            b: self.id(b).to_string(),
            terms,
            prior: self.model.prior_weight(),
            total,
            probability: probability(total),
            decision,
            capped_by,
            thresholds: self.model.thresholds,
        }
    }

    /// The evidence of two records by id.
    pub fn explain(&self, a: &str, b: &str) -> Result<Evidence, MatchError> {
        let x = self
            .number(a)
            .ok_or_else(|| MatchError::UnknownRecord(a.to_string()))?;
        let y = self
            .number(b)
            .ok_or_else(|| MatchError::UnknownRecord(b.to_string()))?;
        Ok(self.evidence_numbers(x, y))
    }

    /// Index size, for reports.
    pub fn index_keys(&self) -> usize {
        self.index.keys()
    }
}
