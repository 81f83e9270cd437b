//! Blocking: which pairs are compared at all. Several rules, each a key computed from one
//! record; two records sharing a key of any rule are a candidate pair, so a typo in one field
//! hides a pair from the rules that use that field only. The index is incremental: adding a
//! record is adding its keys, and a new record is compared with the records of its keys only.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};

use serde::{Deserialize, Serialize};

use crate::compare::{Prepared, Slot};

/// A blocking rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BlockRule {
    /// Double Metaphone of the family name and the birth year.
    FamilySoundYear,
    /// Double Metaphone of the family name and the full birth date.
    FamilySoundBirthDate,
    /// Double Metaphone of the given name and the full birth date.
    GivenSoundBirthDate,
    /// Both names' sounds (either order) and the birth year.
    NamesSoundYear,
    /// The full birth date and the postal code.
    BirthDateZip,
    /// Postal code and the family name's sound.
    ZipFamilySound,
    /// Double Metaphone of the given and of the family name, in either order (a swap of first
    /// and family name keeps the key).
    GivenFamilySound,
    /// House number and street.
    HouseNumberStreet,
    /// Street and the given name's first letter.
    StreetGivenInitial,
    /// An identifier with one of its thirds left out (one typo leaves two thirds intact).
    IdentifierOneTypo,
    /// The full birth date.
    BirthDate,
    /// Postal code and the given name's first letter.
    ZipGivenInitial,
    /// House number and postal code.
    HouseNumberZip,
    /// Any identifier (system and value).
    Identifier,
    Phone,
    Email,
}

impl BlockRule {
    pub fn name(self) -> &'static str {
        match self {
            BlockRule::FamilySoundYear => "family-name sound + birth year",
            BlockRule::FamilySoundBirthDate => "family-name sound + birth date",
            BlockRule::GivenSoundBirthDate => "given-name sound + birth date",
            BlockRule::NamesSoundYear => "both names' sounds + birth year",
            BlockRule::BirthDateZip => "birth date + postal code",
            BlockRule::ZipFamilySound => "postal code + family-name sound",
            BlockRule::GivenFamilySound => "given-name sound + family-name sound",
            BlockRule::HouseNumberStreet => "house number + street",
            BlockRule::StreetGivenInitial => "street + given initial",
            BlockRule::IdentifierOneTypo => "identifier with one typo",
            BlockRule::BirthDate => "birth date",
            BlockRule::ZipGivenInitial => "postal code + given initial",
            BlockRule::HouseNumberZip => "house number + postal code",
            BlockRule::Identifier => "identifier",
            BlockRule::Phone => "phone",
            BlockRule::Email => "email",
        }
    }

    /// The shipped rules.
    pub fn defaults() -> Vec<BlockRule> {
        vec![
            BlockRule::NamesSoundYear,
            BlockRule::FamilySoundBirthDate,
            BlockRule::GivenSoundBirthDate,
            BlockRule::ZipFamilySound,
            BlockRule::HouseNumberZip,
            BlockRule::Identifier,
            BlockRule::HouseNumberStreet,
            BlockRule::StreetGivenInitial,
            BlockRule::Phone,
            BlockRule::Email,
            BlockRule::IdentifierOneTypo,
            BlockRule::FamilySoundYear,
            BlockRule::GivenFamilySound,
            BlockRule::BirthDate,
            BlockRule::ZipGivenInitial,
        ]
    }

    /// A broad rule finds pairs the specific ones miss in small data sets; in a large one its
    /// blocks of common names grow quadratically, so they are searched only while small
    /// (`Settings::max_broad_block`).
    pub fn is_broad(self) -> bool {
        matches!(
            self,
            BlockRule::FamilySoundYear
                | BlockRule::GivenFamilySound
                | BlockRule::BirthDate
                | BlockRule::ZipGivenInitial
        )
    }

    /// The keys of one record under this rule (none when the fields it needs are missing).
    pub(crate) fn keys(self, rule_no: usize, p: &Prepared, out: &mut Vec<u64>) {
        let primary = |codes: &str| codes.split(' ').next().unwrap_or("").to_string();
        let mut push = |parts: &[&str]| {
            if parts.iter().any(|s| s.is_empty()) {
                return;
            }
            let mut h = std::hash::DefaultHasher::new();
            rule_no.hash(&mut h);
            for s in parts {
                s.hash(&mut h);
            }
            out.push(h.finish());
        };
        match self {
            BlockRule::FamilySoundYear => {
                let y = p.birth_year();
                if y > 0 {
                    push(&[&primary(p.get(Slot::FamilyCodes)), &y.to_string()]);
                }
            }
            BlockRule::FamilySoundBirthDate
            | BlockRule::GivenSoundBirthDate
            | BlockRule::BirthDateZip => {
                if p.dob % 100 != 0 && p.dob / 100 % 100 != 0 {
                    let d = p.dob.to_string();
                    match self {
                        BlockRule::FamilySoundBirthDate => {
                            push(&[&primary(p.get(Slot::FamilyCodes)), &d])
                        }
                        BlockRule::GivenSoundBirthDate => {
                            push(&[&primary(p.get(Slot::GivenCodes)), &d])
                        }
                        _ => push(&[p.get(Slot::Zip), &d]),
                    }
                }
            }
            BlockRule::NamesSoundYear => {
                let y = p.birth_year();
                let g = primary(p.get(Slot::GivenCodes));
                let f = primary(p.get(Slot::FamilyCodes));
                if y > 0 {
                    let y = y.to_string();
                    if g <= f {
                        push(&[&g, &f, &y])
                    } else {
                        push(&[&f, &g, &y])
                    }
                }
            }
            BlockRule::ZipFamilySound => {
                push(&[p.get(Slot::Zip), &primary(p.get(Slot::FamilyCodes))])
            }
            BlockRule::GivenFamilySound => {
                let g = primary(p.get(Slot::GivenCodes));
                let f = primary(p.get(Slot::FamilyCodes));
                if g <= f {
                    push(&[&g, &f])
                } else {
                    push(&[&f, &g])
                }
            }
            BlockRule::HouseNumberStreet => push(&[p.get(Slot::HouseNumber), p.get(Slot::Street)]),
            BlockRule::StreetGivenInitial => {
                let g = p.get(Slot::Given);
                push(&[p.get(Slot::Street), g.get(..1).unwrap_or("")]);
            }
            BlockRule::IdentifierOneTypo => {
                // one typo (or a swap of neighbours inside a third) leaves two thirds intact
                for (s, v) in p.identifiers() {
                    let n = v.len();
                    if !(6..=40).contains(&n) || !v.is_ascii() {
                        continue;
                    }
                    let (a, b) = (n / 3, 2 * n / 3);
                    push(&[s, "1", &v[a..]]);
                    push(&[s, "2", &v[..a], &v[b..]]);
                    push(&[s, "3", &v[..b]]);
                }
            }
            BlockRule::BirthDate => {
                if p.dob % 100 != 0 && p.dob / 100 % 100 != 0 {
                    push(&[&p.dob.to_string()]);
                }
            }
            BlockRule::ZipGivenInitial => {
                let g = p.get(Slot::Given);
                push(&[p.get(Slot::Zip), g.get(..1).unwrap_or("")]);
            }
            BlockRule::HouseNumberZip => push(&[p.get(Slot::HouseNumber), p.get(Slot::Zip)]),
            BlockRule::Identifier => {
                for (s, v) in p.identifiers() {
                    push(&[s, v]);
                }
            }
            BlockRule::Phone => push(&[p.get(Slot::Phone)]),
            BlockRule::Email => push(&[p.get(Slot::Email)]),
        }
    }
}

/// Keys are already hashes: the map uses them as they are.
#[derive(Default)]
pub(crate) struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

const END: u32 = u32::MAX;

/// Key → the records that have it, as linked lists in one vector (compact for a million
/// records: no vector per key).
#[derive(Default)]
pub(crate) struct BlockIndex {
    heads: HashMap<u64, (u32, u32), BuildHasherDefault<IdentityHasher>>,
    /// (record, next entry)
    entries: Vec<(u32, u32)>,
}

impl BlockIndex {
    pub fn add(&mut self, key: u64, record: u32) {
        let entry = u32::try_from(self.entries.len()).unwrap_or(END);
        let slot = self.heads.entry(key).or_insert((END, 0));
        self.entries.push((record, slot.0));
        slot.0 = entry;
        slot.1 = slot.1.saturating_add(1);
    }

    /// Number of records under a key.
    pub fn count(&self, key: u64) -> u32 {
        self.heads.get(&key).map_or(0, |s| s.1)
    }

    pub fn for_each(&self, key: u64, mut f: impl FnMut(u32)) {
        let mut e = self.heads.get(&key).map_or(END, |s| s.0);
        while let Some(&(rec, next)) = self.entries.get(e as usize) {
            f(rec);
            e = next;
        }
    }

    pub fn keys(&self) -> usize {
        self.heads.len()
    }
}

/// What blocking produced: candidate pairs per rule (a pair found by several rules counts for
/// each), pairs only that rule found, and blocks skipped for being larger than the limit.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct BlockStats {
    pub rules: Vec<RuleStats>,
    /// Distinct candidate pairs, all rules together.
    pub candidate_pairs: u64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStats {
    pub rule: String,
    pub pairs: u64,
    pub only_this_rule: u64,
    pub oversized_blocks_skipped: u64,
}

impl std::fmt::Display for BlockStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "{:<40} {:>12} {:>12} {:>10}",
            "blocking rule", "pairs", "only rule", "skipped"
        )?;
        for r in &self.rules {
            writeln!(
                f,
                "{:<40} {:>12} {:>12} {:>10}",
                r.rule, r.pairs, r.only_this_rule, r.oversized_blocks_skipped
            )?;
        }
        writeln!(
            f,
            "{:<40} {:>12}",
            "distinct candidate pairs", self.candidate_pairs
        )
    }
}
