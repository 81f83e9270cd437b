//! Accuracy and speed: the FEBRL data sets (read from a folder the fetch script filled, never
//! shipped) and the synthetic population, scored against their ground truth.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::block::BlockStats;
use crate::error::MatchError;
use crate::matcher::{Matcher, PairScope, ScoredPair, Settings, TrainReport};
use crate::model::Decision;
use crate::record::{Address, Identifier, Record};

/// Records with the true entity of each (same entity = same person).
#[derive(Debug, Clone, Default)]
pub struct Labelled {
    pub records: Vec<Record>,
    pub entity: Vec<u64>,
}

/// Reads a FEBRL CSV (`rec_id, given_name, surname, street_number, address_1, address_2,
/// suburb, postcode, state, date_of_birth, soc_sec_id`); the entity is the number in
/// `rec-<n>-org` / `rec-<n>-dup-<k>`.
pub fn read_febrl_csv(text: &str, source: &str) -> Result<Labelled, MatchError> {
    let mut out = Labelled::default();
    let mut lines = text.lines().enumerate();
    let header = lines.next().map(|(_, h)| h).unwrap_or("");
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_string()).collect();
    let col = |name: &str| -> Result<usize, MatchError> {
        cols.iter()
            .position(|c| c == name)
            .ok_or_else(|| MatchError::Csv {
                line: 1,
                reason: format!("no column {name}"),
            })
    };
    let (id, given, surname, number, a1, a2, suburb, postcode, state, dob, ssid) = (
        col("rec_id")?,
        col("given_name")?,
        col("surname")?,
        col("street_number")?,
        col("address_1")?,
        col("address_2")?,
        col("suburb")?,
        col("postcode")?,
        col("state")?,
        col("date_of_birth")?,
        col("soc_sec_id")?,
    );
    for (i, line) in lines {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        let get = |c: usize| f.get(c).copied().unwrap_or("");
        let rec_id = get(id);
        let entity = rec_id
            .split('-')
            .nth(1)
            .and_then(|n| n.parse::<u64>().ok())
            .ok_or_else(|| MatchError::Csv {
                line: i + 1,
                reason: format!("rec_id {rec_id:?} is not rec-<n>-..."),
            })?;
        let street = format!("{} {}", get(number), get(a1)).trim().to_string();
        let lines_: Vec<String> = [street, get(a2).to_string()]
            .into_iter()
            .filter(|l| !l.is_empty())
            .collect();
        let ss = get(ssid);
        out.records.push(Record {
            id: rec_id.to_string(),
            source: source.to_string(),
            given: if get(given).is_empty() {
                vec![]
            } else {
                vec![get(given).to_string()]
            },
            family: get(surname).to_string(),
            birth_date: Some(get(dob).to_string()).filter(|d| !d.is_empty()),
            sex: None,
            address: Some(Address {
                lines: lines_,
                city: get(suburb).to_string(),
                state: get(state).to_string(),
                postal_code: get(postcode).to_string(),
            }),
            phone: None,
            email: None,
            identifiers: if ss.is_empty() {
                vec![]
            } else {
                vec![Identifier {
                    system: "soc_sec_id".into(),
                    value: ss.to_string(),
                }]
            },
        });
        out.entity.push(entity);
    }
    Ok(out)
}

fn read_file(path: &Path) -> Result<String, MatchError> {
    std::fs::read_to_string(path).map_err(|source| MatchError::Io {
        path: path.display().to_string(),
        source,
    })
}

/// Precision, recall and F1 at one threshold.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Accuracy {
    pub threshold: f64,
    pub true_positives: u64,
    pub false_positives: u64,
    pub false_negatives: u64,
    pub precision: f64,
    pub recall: f64,
    pub f1: f64,
}

fn accuracy(threshold: f64, tp: u64, fp: u64, true_pairs: u64) -> Accuracy {
    let fn_ = true_pairs.saturating_sub(tp);
    let precision = if tp + fp == 0 {
        1.0
    } else {
        tp as f64 / (tp + fp) as f64
    };
    let recall = if true_pairs == 0 {
        1.0
    } else {
        tp as f64 / true_pairs as f64
    };
    let f1 = if precision + recall == 0.0 {
        0.0
    } else {
        2.0 * precision * recall / (precision + recall)
    };
    Accuracy {
        threshold,
        true_positives: tp,
        false_positives: fp,
        false_negatives: fn_,
        precision,
        recall,
        f1,
    }
}

/// The benchmark's result on one data set.
#[derive(Debug, Clone, Serialize)]
pub struct BenchResult {
    pub name: String,
    pub records: usize,
    pub true_pairs: u64,
    pub blocking: BlockStats,
    pub training: TrainReport,
    pub shipped: Accuracy,
    pub best: Accuracy,
    /// Persons found (connected components of linked pairs) and true persons.
    pub clusters: Option<(usize, usize)>,
    pub seconds_load: f64,
    pub seconds_train: f64,
    pub seconds_score: f64,
    pub seconds_total: f64,
    pub peak_rss_mb: Option<f64>,
}

impl std::fmt::Display for BenchResult {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "== {} ({} records, {} true pairs)",
            self.name, self.records, self.true_pairs
        )?;
        write!(f, "{}", self.blocking)?;
        writeln!(
            f,
            "EM: {} candidate pairs, {} random pairs for u, {} iterations{}, lambda {:.4}, prior {:.3e}",
            self.training.candidate_pairs,
            self.training.random_pairs,
            self.training.em_iterations,
            if self.training.em_converged {
                " (converged)"
            } else {
                ""
            },
            self.training.lambda,
            self.training.prior
        )?;
        for (label, a) in [
            ("shipped threshold", &self.shipped),
            ("best-F1 threshold", &self.best),
        ] {
            writeln!(
                f,
                "{label:<18} {:>7.2} bits: precision {:.4}  recall {:.4}  F1 {:.4}  (TP {}, FP {}, FN {})",
                a.threshold,
                a.precision,
                a.recall,
                a.f1,
                a.true_positives,
                a.false_positives,
                a.false_negatives
            )?;
        }
        if let Some((found, truth)) = self.clusters {
            writeln!(f, "persons: {found} found, {truth} true")?;
        }
        write!(
            f,
            "time: load {:.3} s, train {:.3} s, score {:.3} s, total {:.3} s",
            self.seconds_load, self.seconds_train, self.seconds_score, self.seconds_total
        )?;
        if let Some(mb) = self.peak_rss_mb {
            write!(f, "; peak memory (process) {mb:.0} MB")?;
        }
        Ok(())
    }
}

/// Peak resident memory of this process (Linux `VmHWM`), MB.
pub fn peak_rss_mb() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

/// Scores a labelled set end to end: insert, train, score every candidate pair, and evaluate
/// at the shipped threshold and at the best-F1 one. `pairs_out` receives the scored pairs as
/// CSV.
pub fn run_labelled(
    name: &str,
    data: &Labelled,
    scope: PairScope,
    settings: Option<Settings>,
    pairs_out: Option<&mut dyn Write>,
    started: Instant,
    seconds_load: f64,
) -> Result<BenchResult, MatchError> {
    let mut settings = settings.unwrap_or_default();
    settings.scope = scope;
    let mut m = Matcher::new(settings);
    let t = Instant::now();
    for r in &data.records {
        m.insert(r)?;
    }
    let training = m.train();
    let seconds_train = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let (pairs, blocking) = m.score_all(f64::NEG_INFINITY);
    let seconds_score = t.elapsed().as_secs_f64();
    let ent = |n: u32| data.entity.get(n as usize).copied();
    let true_pairs = count_true_pairs(data, scope);
    let result = evaluate(
        name,
        &m,
        &pairs,
        true_pairs,
        &ent,
        &data.entity,
        blocking,
        training,
        pairs_out,
    )?;
    Ok(BenchResult {
        seconds_load,
        seconds_train,
        seconds_score,
        seconds_total: started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        ..result
    })
}

fn count_true_pairs(data: &Labelled, scope: PairScope) -> u64 {
    let mut per: HashMap<u64, HashMap<&str, u64>> = HashMap::new();
    for (r, e) in data.records.iter().zip(&data.entity) {
        *per.entry(*e)
            .or_default()
            .entry(r.source.as_str())
            .or_insert(0) += 1;
    }
    per.values()
        .map(|by_source| {
            let n: u64 = by_source.values().sum();
            let all = n * n.saturating_sub(1) / 2;
            match scope {
                PairScope::All => all,
                PairScope::AcrossSources => {
                    let within: u64 = by_source
                        .values()
                        .map(|k| k * k.saturating_sub(1) / 2)
                        .sum();
                    all - within
                }
            }
        })
        .sum()
}

#[allow(clippy::too_many_arguments)]
fn evaluate(
    name: &str,
    m: &Matcher,
    pairs: &[ScoredPair],
    true_pairs: u64,
    ent: &dyn Fn(u32) -> Option<u64>,
    entity: &[u64],
    blocking: BlockStats,
    training: TrainReport,
    pairs_out: Option<&mut dyn Write>,
) -> Result<BenchResult, MatchError> {
    let link = m.model().thresholds.link;
    let is_true = |p: &ScoredPair| ent(p.a).is_some() && ent(p.a) == ent(p.b);
    let (mut tp, mut fp) = (0u64, 0u64);
    for p in pairs.iter().filter(|p| p.decision == Decision::Link) {
        if is_true(p) {
            tp += 1;
        } else {
            fp += 1;
        }
    }
    let shipped = accuracy(link, tp, fp, true_pairs);
    // Best F1: a capped pair counts as scoring just under the link threshold.
    let mut eff: Vec<(f64, bool)> = pairs
        .iter()
        .map(|p| {
            let w = if p.decision != Decision::Link && p.weight >= link {
                link - 1e-9
            } else {
                p.weight
            };
            (w, is_true(p))
        })
        .collect();
    eff.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut best = accuracy(f64::INFINITY, 0, 0, true_pairs);
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut i = 0;
    while i < eff.len() {
        let w = eff[i].0;
        while i < eff.len() && eff[i].0 == w {
            if eff[i].1 {
                tp += 1;
            } else {
                fp += 1;
            }
            i += 1;
        }
        let a = accuracy(w, tp, fp, true_pairs);
        if a.f1 > best.f1 {
            best = a;
        }
    }
    if let Some(out) = pairs_out {
        let io = |source| MatchError::Io {
            path: "pairs-out".into(),
            source,
        };
        writeln!(
            out,
            "record_a,record_b,weight,probability,decision,true_match"
        )
        .map_err(io)?;
        for p in pairs {
            writeln!(
                out,
                "{},{},{:.4},{:.6},{},{}",
                m.id(p.a),
                m.id(p.b),
                p.weight,
                crate::model::probability(p.weight),
                p.decision.as_str(),
                is_true(p)
            )
            .map_err(io)?;
        }
    }
    let clusters = {
        let linked: Vec<(u32, u32)> = pairs
            .iter()
            .filter(|p| p.decision == Decision::Link)
            .map(|p| (p.a, p.b))
            .collect();
        let n = entity.len();
        let found = components(n, &linked);
        let mut truth: Vec<u64> = entity.to_vec();
        truth.sort_unstable();
        truth.dedup();
        Some((found, truth.len()))
    };
    Ok(BenchResult {
        name: name.to_string(),
        records: entity.len(),
        true_pairs,
        blocking,
        training,
        shipped,
        best,
        clusters,
        seconds_load: 0.0,
        seconds_train: 0.0,
        seconds_score: 0.0,
        seconds_total: 0.0,
        peak_rss_mb: None,
    })
}

/// Connected components among `n` nodes (internal numbers 0..n) with the given edges.
pub fn components(n: usize, edges: &[(u32, u32)]) -> usize {
    let mut parent: Vec<u32> = (0..n as u32).collect();
    fn find(p: &mut [u32], mut x: u32) -> u32 {
        while p[x as usize] != x {
            let up = p[p[x as usize] as usize];
            p[x as usize] = up;
            x = up;
        }
        x
    }
    let mut count = n;
    for &(a, b) in edges {
        if (a as usize) >= n || (b as usize) >= n {
            continue;
        }
        let (ra, rb) = (find(&mut parent, a), find(&mut parent, b));
        if ra != rb {
            parent[ra as usize] = rb;
            count -= 1;
        }
    }
    count
}

/// Which FEBRL data set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Febrl {
    One,
    Two,
    Three,
    Four,
}

impl Febrl {
    pub fn name(self) -> &'static str {
        match self {
            Febrl::One => "FEBRL1 (dedupe 1,000)",
            Febrl::Two => "FEBRL2 (dedupe 5,000)",
            Febrl::Three => "FEBRL3 (dedupe 5,000)",
            Febrl::Four => "FEBRL4 (link 5,000 x 5,000)",
        }
    }
}

/// Runs one FEBRL data set from `dir` (the folder with `dataset1.csv` ... `dataset4b.csv`).
pub fn run_febrl(
    dir: &Path,
    which: Febrl,
    pairs_out: Option<&mut dyn Write>,
) -> Result<BenchResult, MatchError> {
    run_febrl_with(dir, which, Settings::default(), pairs_out)
}

/// [`run_febrl`] with other settings.
pub fn run_febrl_with(
    dir: &Path,
    which: Febrl,
    settings: Settings,
    pairs_out: Option<&mut dyn Write>,
) -> Result<BenchResult, MatchError> {
    let started = Instant::now();
    let (data, scope) = match which {
        Febrl::Four => {
            let mut a = read_febrl_csv(&read_file(&dir.join("dataset4a.csv"))?, "a")?;
            let b = read_febrl_csv(&read_file(&dir.join("dataset4b.csv"))?, "b")?;
            a.records.extend(b.records);
            a.entity.extend(b.entity);
            (a, PairScope::AcrossSources)
        }
        other => {
            let file = match other {
                Febrl::One => "dataset1.csv",
                Febrl::Two => "dataset2.csv",
                _ => "dataset3.csv",
            };
            (
                read_febrl_csv(&read_file(&dir.join(file))?, "febrl")?,
                PairScope::All,
            )
        }
    };
    let load = started.elapsed().as_secs_f64();
    run_labelled(
        which.name(),
        &data,
        scope,
        Some(settings),
        pairs_out,
        started,
        load,
    )
}

/// Deduplicates `records` synthetic records (see [`crate::synth`]) streamed into the matcher,
/// training on a sample of records when there are many; only pairs at or above the review
/// threshold are kept (and evaluated) when `keep_all` is false.
pub fn run_synthetic(
    records: usize,
    seed: u64,
    settings: Option<Settings>,
    keep_all: bool,
    pairs_out: Option<&mut dyn Write>,
) -> Result<BenchResult, MatchError> {
    let started = Instant::now();
    let mut settings = settings.unwrap_or_default();
    settings.scope = PairScope::All;
    if records > 50_000 {
        settings.train_every_nth = records / 25_000;
    }
    let mut m = Matcher::new(settings);
    let mut entity = Vec::with_capacity(records);
    let mut failed = None;
    crate::synth::generate_each(records, seed, |r, p| {
        if failed.is_none() {
            if let Err(e) = m.insert(&r) {
                failed = Some(e);
            }
        }
        entity.push(p);
    });
    if let Some(e) = failed {
        return Err(e);
    }
    let seconds_load = started.elapsed().as_secs_f64();
    let t = Instant::now();
    let training = m.train();
    let seconds_train = t.elapsed().as_secs_f64();
    let t = Instant::now();
    let floor = if keep_all {
        f64::NEG_INFINITY
    } else {
        m.model().thresholds.review
    };
    let (pairs, blocking) = m.score_all(floor);
    let seconds_score = t.elapsed().as_secs_f64();
    let mut sizes: HashMap<u64, u64> = HashMap::new();
    for e in &entity {
        *sizes.entry(*e).or_insert(0) += 1;
    }
    let true_pairs = sizes.values().map(|k| k * k.saturating_sub(1) / 2).sum();
    let ent = |n: u32| entity.get(n as usize).copied();
    let name = format!("synthetic population ({records} records, seed {seed})");
    let result = evaluate(
        &name, &m, &pairs, true_pairs, &ent, &entity, blocking, training, pairs_out,
    )?;
    Ok(BenchResult {
        seconds_load,
        seconds_train,
        seconds_score,
        seconds_total: started.elapsed().as_secs_f64(),
        peak_rss_mb: peak_rss_mb(),
        ..result
    })
}
