//! Fellegi–Sunter: per field and level, m = P(level | same person) and u = P(level | different
//! people); a level weighs log2(m/u) bits, a pair the sum plus the prior odds. m and u are
//! estimated by expectation maximization on the comparison vectors of the candidate pairs (no
//! labels); u can instead come from random pairs (which are almost all different people), and
//! confirmed pairs from reviewers refine m.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::compare::{FIELDS, Field, MAX_LEVELS, NF, level};

/// A decision about a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Decision {
    NoLink,
    Review,
    Link,
}

impl Decision {
    pub fn as_str(self) -> &'static str {
        match self {
            Decision::Link => "link",
            Decision::Review => "review",
            Decision::NoLink => "no-link",
        }
    }
}

/// Thresholds on the match weight (bits, prior included): at or above `link` the pair links, at
/// or above `review` it waits for a person, below it does not link.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Thresholds {
    pub link: f64,
    pub review: f64,
}

impl Default for Thresholds {
    fn default() -> Self {
        Thresholds {
            link: 4.0,
            review: 0.0,
        }
    }
}

/// A rule that keeps a pair out of automatic linking whatever its total: when `field` is at
/// `level` (and no identifier of the same system agrees exactly), the decision is at most
/// `at_most`. Twins share a birth date, an address and a family name; a parent and a child
/// with the same name share all but the birth year: Fellegi–Sunter's sum would link both.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Cap {
    pub field: Field,
    pub level: u8,
    pub at_most: Decision,
}

/// The shipped caps: a clearly different given name, a clearly different birth date, or a
/// different sex makes a pair at most one to review (twins of either sex, parent and child).
pub fn default_caps() -> Vec<Cap> {
    vec![
        Cap {
            field: Field::Given,
            level: level::NAME_DIFFERENT,
            at_most: Decision::Review,
        },
        Cap {
            field: Field::BirthDate,
            level: level::DOB_DIFFERENT,
            at_most: Decision::Review,
        },
        Cap {
            field: Field::Sex,
            level: 2,
            at_most: Decision::Review,
        },
    ]
}

/// The parameters of the model, serializable so an organization's trained model can be kept.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Model {
    /// m[field][level-1]
    pub m: Vec<Vec<f64>>,
    /// u[field][level-1]
    pub u: Vec<Vec<f64>>,
    /// Prior probability that two records of a random pair are the same person.
    pub prior: f64,
    /// Proportion of matches among the candidate pairs EM was trained on.
    pub lambda: f64,
    pub thresholds: Thresholds,
    pub caps: Vec<Cap>,
    /// Term-frequency adjustment on exact name agreement (a rare surname weighs more).
    pub term_frequency: bool,
    /// EM iterations run in the last training, and whether it converged.
    pub em_iterations: usize,
    pub em_converged: bool,
}

const P_MIN: f64 = 1e-5;
/// No level is rarer than this among matches: sources make mistakes in every field, and EM
/// on correlated fields would otherwise make a single disagreement nearly a veto.
pub const M_FLOOR: f64 = 0.002;

fn clamp(p: f64) -> f64 {
    p.clamp(P_MIN, 1.0 - P_MIN)
}

impl Default for Model {
    fn default() -> Self {
        Model::initial()
    }
}

/// A histogram of comparison vectors: each distinct vector with its count.
#[derive(Debug, Clone, Default)]
pub struct Patterns {
    pub counts: HashMap<[u8; NF], u64>,
    pub total: u64,
}

impl Patterns {
    pub fn add(&mut self, g: [u8; NF]) {
        *self.counts.entry(g).or_insert(0) += 1;
        self.total += 1;
    }
}

/// Per field and level counts, for u from random pairs and m from confirmed pairs.
fn level_frequencies(patterns: &Patterns) -> Vec<Vec<f64>> {
    let mut out: Vec<Vec<f64>> = FIELDS.iter().map(|f| vec![0.0; f.level_count()]).collect();
    for (g, n) in &patterns.counts {
        for (c, &l) in g.iter().enumerate() {
            if l > 0 {
                if let Some(slot) = out[c].get_mut(usize::from(l) - 1) {
                    *slot += *n as f64;
                }
            }
        }
    }
    out
}

fn normalized(counts: &[f64], pseudo: f64) -> Vec<f64> {
    let total: f64 = counts.iter().sum::<f64>() + pseudo * counts.len() as f64;
    counts
        .iter()
        .map(|c| clamp((c + pseudo) / total.max(f64::MIN_POSITIVE)))
        .collect()
}

impl Model {
    /// Starting values before any training: agreement likely among matches, rare among
    /// non-matches.
    pub fn initial() -> Model {
        let mut m = Vec::new();
        let mut u = Vec::new();
        for f in FIELDS {
            let n = f.level_count();
            // m: decreasing from the first level; the last level ("different") small.
            let mut mf: Vec<f64> = (0..n)
                .map(|i| 0.5f64.powi(i32::try_from(i).unwrap_or(0) + 1))
                .collect();
            let mut uf: Vec<f64> = (0..n).map(|i| 0.02 * (i + 1) as f64).collect();
            if let Some(last) = uf.last_mut() {
                *last = 1.0;
            }
            if let Some(last) = mf.last_mut() {
                *last = 0.02;
            }
            let sm: f64 = mf.iter().sum();
            let su: f64 = uf.iter().sum();
            m.push(mf.iter().map(|x| x / sm).collect());
            u.push(uf.iter().map(|x| x / su).collect());
        }
        Model {
            m,
            u,
            prior: 1e-4,
            lambda: 0.1,
            thresholds: Thresholds::default(),
            caps: default_caps(),
            term_frequency: true,
            em_iterations: 0,
            em_converged: false,
        }
    }

    /// Log2 Bayes factor of one field at one level (0 for a missing value).
    pub fn weight(&self, field: usize, level: u8) -> f64 {
        if level == 0 {
            return 0.0;
        }
        let i = usize::from(level) - 1;
        match (
            self.m.get(field).and_then(|v| v.get(i)),
            self.u.get(field).and_then(|v| v.get(i)),
        ) {
            (Some(m), Some(u)) => (m / u).log2(),
            _ => 0.0,
        }
    }

    /// Prior log2 odds of a match for a random pair.
    pub fn prior_weight(&self) -> f64 {
        let p = clamp(self.prior);
        (p / (1.0 - p)).log2()
    }

    /// A table of weights for fast scoring: [field][level] with level 0 = 0.
    pub fn weight_table(&self) -> [[f64; MAX_LEVELS + 1]; NF] {
        let mut t = [[0.0; MAX_LEVELS + 1]; NF];
        for (c, row) in t.iter_mut().enumerate() {
            for (l, w) in row.iter_mut().enumerate().skip(1) {
                *w = self.weight(c, u8::try_from(l).unwrap_or(0));
            }
        }
        t
    }

    /// Expectation maximization over a histogram of comparison vectors. When `fixed_u` is
    /// true u is kept (e.g. estimated from random pairs) and only m and lambda move.
    pub fn train_em(&mut self, patterns: &Patterns, fixed_u: bool, max_iter: usize) {
        if patterns.total == 0 {
            return;
        }
        let pats: Vec<(&[u8; NF], f64)> = patterns
            .counts
            .iter()
            .map(|(g, n)| (g, *n as f64))
            .collect();
        let mut lambda = clamp(self.lambda);
        self.em_converged = false;
        self.em_iterations = 0;
        for it in 0..max_iter {
            let mut m_acc: Vec<Vec<f64>> =
                FIELDS.iter().map(|f| vec![0.0; f.level_count()]).collect();
            let mut u_acc = m_acc.clone();
            let mut matches = 0.0;
            let mut all = 0.0;
            for (g, n) in &pats {
                let mut lm = lambda.ln();
                let mut lu = (1.0 - lambda).ln();
                for (c, &l) in g.iter().enumerate() {
                    if l > 0 {
                        let i = usize::from(l) - 1;
                        lm += self.m[c].get(i).copied().unwrap_or(P_MIN).ln();
                        lu += self.u[c].get(i).copied().unwrap_or(P_MIN).ln();
                    }
                }
                let p = 1.0 / (1.0 + (lu - lm).exp());
                matches += p * n;
                all += n;
                for (c, &l) in g.iter().enumerate() {
                    if l > 0 {
                        let i = usize::from(l) - 1;
                        if let (Some(ma), Some(ua)) = (m_acc[c].get_mut(i), u_acc[c].get_mut(i)) {
                            *ma += p * n;
                            *ua += (1.0 - p) * n;
                        }
                    }
                }
            }
            let new_lambda = clamp(matches / all);
            let mut delta = (new_lambda - lambda).abs();
            for c in 0..NF {
                let nm: Vec<f64> = normalized(&m_acc[c], 0.01)
                    .into_iter()
                    .map(|x| x.max(M_FLOOR))
                    .collect();
                for (old, new) in self.m[c].iter_mut().zip(nm) {
                    delta = delta.max((*old - new).abs());
                    *old = new;
                }
                if !fixed_u {
                    let nu = normalized(&u_acc[c], 0.01);
                    for (old, new) in self.u[c].iter_mut().zip(nu) {
                        delta = delta.max((*old - new).abs());
                        *old = new;
                    }
                }
            }
            lambda = new_lambda;
            self.em_iterations = it + 1;
            if delta < 1e-5 {
                self.em_converged = true;
                break;
            }
        }
        self.lambda = lambda;
    }

    /// u from the comparison vectors of random pairs (nearly all different people).
    pub fn set_u_from_random(&mut self, random: &Patterns) {
        if random.total == 0 {
            return;
        }
        for (c, counts) in level_frequencies(random).iter().enumerate() {
            self.u[c] = normalized(counts, 0.5);
        }
    }

    /// Refines m with pairs a reviewer confirmed: their level counts are blended with the
    /// estimate, weighing the estimate like `prior_strength` pairs.
    pub fn refine_m_with_confirmed(&mut self, confirmed: &Patterns, prior_strength: f64) {
        if confirmed.total == 0 {
            return;
        }
        for (c, counts) in level_frequencies(confirmed).iter().enumerate() {
            let n: f64 = counts.iter().sum();
            if n == 0.0 {
                continue;
            }
            for (i, m) in self.m[c].iter_mut().enumerate() {
                let k = counts.get(i).copied().unwrap_or(0.0);
                *m = clamp((*m * prior_strength + k) / (prior_strength + n));
            }
        }
    }

    pub fn decide(&self, weight: f64) -> Decision {
        if weight >= self.thresholds.link {
            Decision::Link
        } else if weight >= self.thresholds.review {
            Decision::Review
        } else {
            Decision::NoLink
        }
    }
}

/// Match probability from a match weight in bits.
pub fn probability(weight: f64) -> f64 {
    1.0 / (1.0 + (-weight).exp2())
}
