//! Evidence: what a decision rests on, kept with the decision and printable for a person.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::compare::Field;
use crate::model::{Decision, Thresholds};

/// One comparison's part in a decision.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Term {
    pub field: Field,
    /// 0 when either side is missing.
    pub level: u8,
    pub label: String,
    pub a_value: String,
    pub b_value: String,
    pub m: Option<f64>,
    pub u: Option<f64>,
    /// log2(m/u), bits.
    pub weight: f64,
    /// Term-frequency adjustment on exact name agreement, bits.
    pub tf_adjustment: f64,
}

/// The evidence of one pair: each comparison's weight, the prior and the total.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Evidence {
    pub a: String,
    pub b: String,
    pub terms: Vec<Term>,
    /// Prior log2 odds of a match, bits.
    pub prior: f64,
    /// Prior plus every term, bits.
    pub total: f64,
    pub probability: f64,
    pub decision: Decision,
    /// The rule that kept the pair out of automatic linking, if any.
    pub capped_by: Option<String>,
    pub thresholds: Thresholds,
}

impl fmt::Display for Evidence {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}  vs  {}", self.a, self.b)?;
        writeln!(
            f,
            "  {:<17} {:<24} {:<24} {:<34} {:>8}",
            "field", "a", "b", "level", "bits"
        )?;
        for t in &self.terms {
            let tf = if t.tf_adjustment != 0.0 {
                format!(" (term frequency {:+.2})", t.tf_adjustment)
            } else {
                String::new()
            };
            writeln!(
                f,
                "  {:<17} {:<24} {:<24} {:<34} {:>+8.2}{}",
                t.field.name(),
                clip(&t.a_value),
                clip(&t.b_value),
                t.label,
                t.weight,
                tf
            )?;
        }
        writeln!(f, "  {:<17} {:>96.2}", "prior", self.prior)?;
        writeln!(
            f,
            "  total {:+.2} bits (match probability {:.4}); link at >= {:.1}, review at >= {:.1}",
            self.total, self.probability, self.thresholds.link, self.thresholds.review
        )?;
        if let Some(c) = &self.capped_by {
            writeln!(f, "  capped: {c}")?;
        }
        write!(f, "  decision: {}", self.decision.as_str())
    }
}

fn clip(s: &str) -> String {
    if s.chars().count() <= 24 {
        s.to_string()
    } else {
        let mut t: String = s.chars().take(23).collect();
        t.push('…');
        t
    }
}
