//! The matcher's record: the few facts about a person that matching uses, as a source wrote
//! them. No FHIR here: `fhir.rs` builds these from a Patient, the benchmarks from CSV rows.

use serde::{Deserialize, Serialize};

/// Administrative sex as sources report it; `Other` and `Unknown` never count as a
/// disagreement with anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Sex {
    Female,
    Male,
    Other,
    Unknown,
}

impl Sex {
    /// Reads `male`/`m`, `female`/`f` (any case); anything else is `Unknown` or `Other`.
    pub fn parse(s: &str) -> Sex {
        match s.trim().to_ascii_lowercase().as_str() {
            "f" | "female" | "w" => Sex::Female,
            "m" | "male" => Sex::Male,
            "o" | "other" => Sex::Other,
            _ => Sex::Unknown,
        }
    }
}

/// A postal address: street lines (house number and street first; a unit may be anywhere),
/// city, state, postal code.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    pub lines: Vec<String>,
    pub city: String,
    pub state: String,
    pub postal_code: String,
}

/// An identifier with the system (assigning authority) that gives its value a meaning.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identifier {
    pub system: String,
    pub value: String,
}

/// One source's record of a person.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// Unique among all records the matcher sees (e.g. `source/Patient/id`).
    pub id: String,
    /// Where the record comes from; link-only matching compares records of different sources.
    pub source: String,
    /// Given names in order (first, then middle names).
    pub given: Vec<String>,
    pub family: String,
    /// `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-MM` or `YYYY`.
    pub birth_date: Option<String>,
    pub sex: Option<Sex>,
    pub address: Option<Address>,
    pub phone: Option<String>,
    pub email: Option<String>,
    pub identifiers: Vec<Identifier>,
}
