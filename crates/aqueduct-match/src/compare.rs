//! Comparisons with levels. A record is prepared once (normalized, phonetic codes computed) into
//! a compact form; comparing two prepared records gives, per field, a level: 0 when either side
//! is missing (no evidence), else 1 for the strongest agreement up to the field's last level,
//! "different". What each level weighs is the model's business (`model.rs`), not this file's.

use std::collections::HashMap;
use std::sync::LazyLock;

use rphonetic::DoubleMetaphone;
use serde::{Deserialize, Serialize};
use strsim::jaro_winkler;

use crate::normalize;
use crate::record::{Record, Sex};

/// The fields compared, in the order of a comparison vector.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Field {
    Given,
    Family,
    BirthDate,
    Sex,
    Street,
    Line2,
    /// Postal code, city and state together: a move changes them all at once, so counting
    /// them separately would count one fact three times.
    Place,
    Phone,
    Email,
    Identifier,
}

/// Number of compared fields.
pub const NF: usize = 10;
/// Most levels any field has (level 0, "missing", not counted).
pub const MAX_LEVELS: usize = 8;

pub const FIELDS: [Field; NF] = [
    Field::Given,
    Field::Family,
    Field::BirthDate,
    Field::Sex,
    Field::Street,
    Field::Line2,
    Field::Place,
    Field::Phone,
    Field::Email,
    Field::Identifier,
];

pub mod level {
    //! Level numbers shared by the comparison and the rules that look at them.
    pub const MISSING: u8 = 0;
    pub const NAME_EXACT: u8 = 1;
    pub const GIVEN_NICKNAME: u8 = 2;
    pub const FAMILY_COMPOUND: u8 = 2;
    pub const NAME_JW_HIGH: u8 = 3;
    pub const NAME_PHONETIC: u8 = 4;
    pub const NAME_JW_MID: u8 = 5;
    pub const GIVEN_INITIAL: u8 = 6;
    pub const NAME_SWAPPED: u8 = 7;
    pub const NAME_DIFFERENT: u8 = 8;
    pub const DOB_EXACT: u8 = 1;
    pub const DOB_DAY_MONTH_SWAPPED: u8 = 2;
    pub const DOB_ONE_DIGIT: u8 = 3;
    pub const DOB_YEAR_ONLY: u8 = 4;
    pub const DOB_DIFFERENT: u8 = 5;
    pub const ID_SAME: u8 = 1;
    pub const ID_ONE_TYPO: u8 = 2;
    pub const ID_DIFFERENT: u8 = 3;
}

impl Field {
    pub fn index(self) -> usize {
        FIELDS.iter().position(|f| *f == self).unwrap_or(0)
    }

    pub fn name(self) -> &'static str {
        match self {
            Field::Given => "given name",
            Field::Family => "family name",
            Field::BirthDate => "birth date",
            Field::Sex => "sex",
            Field::Street => "street",
            Field::Line2 => "address line 2",
            Field::Place => "postal code, city",
            Field::Phone => "phone",
            Field::Email => "email",
            Field::Identifier => "identifier",
        }
    }

    /// Labels of levels 1..=n.
    pub fn levels(self) -> &'static [&'static str] {
        match self {
            Field::Given => &[
                "exact",
                "nickname",
                "Jaro-Winkler >= 0.92",
                "sounds alike (Double Metaphone)",
                "Jaro-Winkler >= 0.80",
                "initial",
                "swapped with family name",
                "different",
            ],
            Field::Family => &[
                "exact",
                "part of a compound name",
                "Jaro-Winkler >= 0.92",
                "sounds alike (Double Metaphone)",
                "Jaro-Winkler >= 0.80",
                "(unused)",
                "swapped with given name",
                "different",
            ],
            Field::BirthDate => &[
                "exact",
                "day and month swapped",
                "one digit off",
                "same year only",
                "different",
            ],
            Field::Sex => &["same", "different"],
            Field::Street => &[
                "exact",
                "same street, other unit",
                "same number, street Jaro-Winkler >= 0.88",
                "Jaro-Winkler >= 0.80",
                "swapped with address line 2",
                "different",
            ],
            Field::Line2 => &[
                "exact",
                "Jaro-Winkler >= 0.88",
                "swapped with street",
                "different",
            ],
            Field::Place => &[
                "same postal code and city",
                "same postal code",
                "same city and state",
                "postal code one digit off or city Jaro-Winkler >= 0.88",
                "same state only",
                "different",
            ],
            Field::Phone => &["exact (E.164)", "one digit off", "different"],
            Field::Email => &[
                "exact (case-insensitive)",
                "same mailbox, other domain",
                "Jaro-Winkler >= 0.90",
                "different",
            ],
            Field::Identifier => &[
                "same system, same value",
                "same system, one typo",
                "same system, different value",
            ],
        }
    }

    pub fn level_count(self) -> usize {
        self.levels().len()
    }

    pub fn level_label(self, level: u8) -> &'static str {
        if level == 0 {
            return "missing";
        }
        self.levels()
            .get(usize::from(level) - 1)
            .copied()
            .unwrap_or("?")
    }
}

/// String slots of a prepared record.
#[derive(Clone, Copy)]
#[repr(usize)]
pub(crate) enum Slot {
    Given = 0,
    GivenRest,
    Family,
    FamilyJoined,
    GivenCodes,
    FamilyCodes,
    Street,
    HouseNumber,
    Unit,
    Line2,
    City,
    State,
    Zip,
    Phone,
    Email,
    Identifiers,
}
const SLOTS: usize = 16;

/// A record ready for comparison: every normalized string in one allocation.
#[derive(Clone, Debug)]
pub struct Prepared {
    buf: Box<str>,
    ends: [u16; SLOTS],
    /// `YYYYMMDD`, 0 when missing.
    pub(crate) dob: u32,
    /// 0 missing, 1 female, 2 male.
    pub(crate) sex: u8,
}

static DOUBLE_METAPHONE: LazyLock<DoubleMetaphone> = LazyLock::new(DoubleMetaphone::default);

/// "PRIMARY ALTERNATE" Double Metaphone codes (alternate only when it differs); input must be
/// ASCII letters (normalized names are).
fn phonetic_codes(word: &str) -> String {
    if word.is_empty() {
        return String::new();
    }
    let r = DOUBLE_METAPHONE.double_metaphone(word);
    let (p, a) = (r.primary(), r.alternate());
    if a.is_empty() || a == p {
        p
    } else {
        format!("{p} {a}")
    }
}

fn cut(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

impl Prepared {
    pub fn new(r: &Record) -> Prepared {
        let mut given_words: Vec<String> = r
            .given
            .iter()
            .flat_map(|g| normalize::name_words(g))
            .collect();
        given_words.truncate(6);
        let given = given_words.first().cloned().unwrap_or_default();
        let given_rest = given_words
            .get(1..)
            .map(|w| w.join(" "))
            .unwrap_or_default();
        let mut family_words = normalize::name_words(&r.family);
        family_words.truncate(6);
        let family = family_words.join(" ");
        let family_joined = family_words.concat();
        let given_codes = phonetic_codes(cut(&given, 40));
        let family_codes = phonetic_codes(cut(&family_joined, 40));

        let (mut street, mut number, mut unit, mut line2, mut city, mut state, mut zip) =
            Default::default();
        if let Some(a) = &r.address {
            let mut lines = a.lines.iter().filter(|l| !l.trim().is_empty());
            if let Some(first) = lines.next() {
                let s = normalize::street_line(first);
                street = s.street;
                number = s.number;
                unit = s.unit;
            }
            let mut rest = Vec::new();
            for l in lines.take(3) {
                let s = normalize::street_line(l);
                if unit.is_empty() && !s.unit.is_empty() && s.street.is_empty() {
                    unit = s.unit;
                } else {
                    rest.push(normalize::place(l));
                }
            }
            line2 = rest.join(" ");
            city = normalize::place(&a.city);
            state = normalize::place(&a.state);
            zip = normalize::zip5(&a.postal_code);
        }
        let phone = r
            .phone
            .as_deref()
            .map(normalize::phone_e164)
            .unwrap_or_default();
        let email = r.email.as_deref().map(normalize::email).unwrap_or_default();
        let mut ids: Vec<(String, String)> = r
            .identifiers
            .iter()
            .map(|i| normalize::identifier(&i.system, &i.value))
            .filter(|(_, v)| !v.is_empty())
            .collect();
        ids.sort();
        ids.dedup();
        ids.truncate(8);
        let identifiers = ids
            .iter()
            .map(|(s, v)| {
                format!(
                    "{}\u{1f}{}",
                    s.replace(['\u{1f}', '\u{1e}'], ""),
                    v.replace(['\u{1f}', '\u{1e}'], "")
                )
            })
            .collect::<Vec<_>>()
            .join("\u{1e}");

        let parts: [&str; SLOTS] = [
            &given,
            &given_rest,
            &family,
            &family_joined,
            &given_codes,
            &family_codes,
            &street,
            &number,
            &unit,
            &line2,
            &city,
            &state,
            &zip,
            &phone,
            &email,
            &identifiers,
        ];
        let mut buf = String::new();
        let mut ends = [0u16; SLOTS];
        for (i, p) in parts.iter().enumerate() {
            let max = if i == Slot::Identifiers as usize {
                1000
            } else {
                normalize::MAX_FIELD
            };
            buf.push_str(cut(p, max));
            ends[i] = u16::try_from(buf.len()).unwrap_or(u16::MAX);
        }
        let dob = r
            .birth_date
            .as_deref()
            .and_then(normalize::birth_date)
            .unwrap_or(0);
        let sex = match r.sex {
            Some(Sex::Female) => 1,
            Some(Sex::Male) => 2,
            _ => 0,
        };
        Prepared {
            buf: buf.into_boxed_str(),
            ends,
            dob,
            sex,
        }
    }

    pub(crate) fn get(&self, slot: Slot) -> &str {
        let i = slot as usize;
        let start = if i == 0 {
            0
        } else {
            usize::from(self.ends[i - 1])
        };
        let end = usize::from(self.ends[i]);
        self.buf.get(start..end).unwrap_or("")
    }

    pub(crate) fn identifiers(&self) -> impl Iterator<Item = (&str, &str)> {
        self.get(Slot::Identifiers)
            .split('\u{1e}')
            .filter_map(|p| p.split_once('\u{1f}'))
    }

    /// Birth year, 0 when unknown.
    pub(crate) fn birth_year(&self) -> u32 {
        self.dob / 10_000
    }

    /// The normalized value a field's comparison looked at, for explanations.
    pub fn value(&self, field: Field) -> String {
        match field {
            Field::Given => {
                let rest = self.get(Slot::GivenRest);
                if rest.is_empty() {
                    self.get(Slot::Given).to_string()
                } else {
                    format!("{} ({rest})", self.get(Slot::Given))
                }
            }
            Field::Family => self.get(Slot::Family).to_string(),
            Field::BirthDate => match self.dob {
                0 => String::new(),
                d => format!("{:04}-{:02}-{:02}", d / 10_000, d / 100 % 100, d % 100),
            },
            Field::Sex => match self.sex {
                1 => "female".into(),
                2 => "male".into(),
                _ => String::new(),
            },
            Field::Street => {
                let mut s = format!("{} {}", self.get(Slot::HouseNumber), self.get(Slot::Street))
                    .trim()
                    .to_string();
                if !self.get(Slot::Unit).is_empty() {
                    s.push_str(" unit ");
                    s.push_str(self.get(Slot::Unit));
                }
                s
            }
            Field::Line2 => self.get(Slot::Line2).to_string(),
            Field::Place => [
                self.get(Slot::Zip),
                self.get(Slot::City),
                self.get(Slot::State),
            ]
            .iter()
            .filter(|s| !s.is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" "),
            Field::Phone => self.get(Slot::Phone).to_string(),
            Field::Email => self.get(Slot::Email).to_string(),
            Field::Identifier => self
                .identifiers()
                .map(|(s, v)| format!("{s}|{v}"))
                .collect::<Vec<_>>()
                .join(", "),
        }
    }
}

struct Nicknames {
    groups: HashMap<&'static str, Vec<u16>>,
}

/// The shipped nickname table (`data/nicknames.csv`).
static NICKNAMES: LazyLock<Nicknames> = LazyLock::new(|| {
    let mut groups: HashMap<&'static str, Vec<u16>> = HashMap::new();
    let lines = include_str!("../data/nicknames.csv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty());
    for (gid, line) in lines.enumerate() {
        let gid = u16::try_from(gid).unwrap_or(u16::MAX);
        for name in line.split(',') {
            groups.entry(name.trim()).or_default().push(gid);
        }
    }
    Nicknames { groups }
});

/// True when the two given names stand for the same name in the shipped table (Bob/Robert,
/// Liz/Elizabeth; also Bob/Rob, both short for Robert).
pub fn nickname_equivalent(a: &str, b: &str) -> bool {
    let t = &NICKNAMES.groups;
    match (t.get(a), t.get(b)) {
        (Some(ga), Some(gb)) => ga.iter().any(|g| gb.contains(g)),
        _ => false,
    }
}

fn phonetic_equal(a: &str, b: &str) -> bool {
    !a.is_empty() && !b.is_empty() && a.split(' ').any(|x| b.split(' ').any(|y| x == y))
}

/// Levels for two names without the swap check (shared by given and family).
fn name_level(a: &str, b: &str, a_codes: &str, b_codes: &str, nick: bool) -> u8 {
    use level::*;
    if a == b {
        return NAME_EXACT;
    }
    if nick && nickname_equivalent(a, b) {
        return GIVEN_NICKNAME;
    }
    let jw = jaro_winkler(a, b);
    if jw >= 0.92 {
        return NAME_JW_HIGH;
    }
    if phonetic_equal(a_codes, b_codes) {
        return NAME_PHONETIC;
    }
    if jw >= 0.80 {
        return NAME_JW_MID;
    }
    NAME_DIFFERENT
}

fn given_level(a: &Prepared, b: &Prepared) -> u8 {
    use level::*;
    let (ga, gb) = (a.get(Slot::Given), b.get(Slot::Given));
    if ga.is_empty() || gb.is_empty() {
        return MISSING;
    }
    let l = name_level(
        ga,
        gb,
        a.get(Slot::GivenCodes),
        b.get(Slot::GivenCodes),
        true,
    );
    if l != NAME_DIFFERENT && l != NAME_JW_MID {
        return l;
    }
    if (ga.len() == 1 || gb.len() == 1) && ga.as_bytes().first() == gb.as_bytes().first() {
        return GIVEN_INITIAL;
    }
    if swapped(a, b) {
        return NAME_SWAPPED;
    }
    l
}

/// First and family name exchanged between the two records (each side close to the other's).
fn swapped(a: &Prepared, b: &Prepared) -> bool {
    let close =
        |x: &str, y: &str| !x.is_empty() && !y.is_empty() && (x == y || jaro_winkler(x, y) >= 0.92);
    let (ga, fa) = (a.get(Slot::Given), a.get(Slot::FamilyJoined));
    let (gb, fb) = (b.get(Slot::Given), b.get(Slot::FamilyJoined));
    ga != gb && close(ga, fb) && close(fa, gb)
}

fn family_level(a: &Prepared, b: &Prepared) -> u8 {
    use level::*;
    let (fa, fb) = (a.get(Slot::FamilyJoined), b.get(Slot::FamilyJoined));
    if fa.is_empty() || fb.is_empty() {
        return MISSING;
    }
    if fa == fb {
        return NAME_EXACT;
    }
    let (ta, tb) = (a.get(Slot::Family), b.get(Slot::Family));
    if (ta.contains(' ') || tb.contains(' '))
        && ta
            .split(' ')
            .any(|x| x.len() > 1 && tb.split(' ').any(|y| x == y))
    {
        return FAMILY_COMPOUND;
    }
    let l = name_level(
        fa,
        fb,
        a.get(Slot::FamilyCodes),
        b.get(Slot::FamilyCodes),
        false,
    );
    if (l == NAME_DIFFERENT || l == NAME_JW_MID) && swapped(a, b) {
        return NAME_SWAPPED;
    }
    l
}

/// Digit strings of equal length that differ in exactly one place, or in two adjacent places
/// swapped.
pub(crate) fn one_typo(a: &str, b: &str) -> bool {
    if a.len() != b.len() {
        // one insertion or deletion
        let (s, l) = if a.len() < b.len() { (a, b) } else { (b, a) };
        if l.len() != s.len() + 1 {
            return false;
        }
        let (sb, lb) = (s.as_bytes(), l.as_bytes());
        let mut i = 0;
        while i < sb.len() && sb[i] == lb[i] {
            i += 1;
        }
        return sb[i..] == lb[i + 1..];
    }
    let (ab, bb) = (a.as_bytes(), b.as_bytes());
    let diffs: Vec<usize> = (0..ab.len()).filter(|&i| ab[i] != bb[i]).collect();
    match diffs.as_slice() {
        [_] => true,
        [i, j] => *j == i + 1 && ab[*i] == bb[*j] && ab[*j] == bb[*i],
        _ => false,
    }
}

fn dob_level(a: u32, b: u32) -> u8 {
    use level::*;
    if a == 0 || b == 0 {
        return MISSING;
    }
    if a == b {
        return DOB_EXACT;
    }
    let (ya, ma, da) = (a / 10_000, a / 100 % 100, a % 100);
    let (yb, mb, db) = (b / 10_000, b / 100 % 100, b % 100);
    let partial = ma == 0 || mb == 0 || da == 0 || db == 0;
    if !partial && ya == yb && ma == db && da == mb {
        return DOB_DAY_MONTH_SWAPPED;
    }
    if !partial && one_typo(&format!("{a:08}"), &format!("{b:08}")) {
        return DOB_ONE_DIGIT;
    }
    if ya == yb {
        return DOB_YEAR_ONLY;
    }
    DOB_DIFFERENT
}

fn simple_level(a: &str, b: &str, jw_min: f64) -> u8 {
    if a.is_empty() || b.is_empty() {
        0
    } else if a == b {
        1
    } else if jaro_winkler(a, b) >= jw_min {
        2
    } else {
        3
    }
}

fn street_level(a: &Prepared, b: &Prepared) -> u8 {
    let (sa, sb) = (a.get(Slot::Street), b.get(Slot::Street));
    let (na, nb) = (a.get(Slot::HouseNumber), b.get(Slot::HouseNumber));
    if (sa.is_empty() && na.is_empty()) || (sb.is_empty() && nb.is_empty()) {
        return 0;
    }
    if sa == sb && na == nb {
        return if a.get(Slot::Unit) == b.get(Slot::Unit) {
            1
        } else {
            2
        };
    }
    if na == nb && !na.is_empty() && jaro_winkler(sa, sb) >= 0.88 {
        return 3;
    }
    let full = |n: &str, s: &str| format!("{n} {s}");
    if jaro_winkler(&full(na, sa), &full(nb, sb)) >= 0.80 {
        return 4;
    }
    if lines_swapped(a, b) {
        return 5;
    }
    6
}

/// Street and second line exchanged between the two records.
fn lines_swapped(a: &Prepared, b: &Prepared) -> bool {
    let close =
        |x: &str, y: &str| !x.is_empty() && !y.is_empty() && (x == y || jaro_winkler(x, y) >= 0.88);
    let (sa, la) = (a.get(Slot::Street), a.get(Slot::Line2));
    let (sb, lb) = (b.get(Slot::Street), b.get(Slot::Line2));
    (close(sa, lb) && (close(la, sb) || la.is_empty() || sb.is_empty()))
        || (close(la, sb) && (sa.is_empty() || lb.is_empty()))
}

fn line2_level(a: &Prepared, b: &Prepared) -> u8 {
    let l = simple_level(a.get(Slot::Line2), b.get(Slot::Line2), 0.88);
    if l == 0 || l == 3 {
        if lines_swapped(a, b) {
            return 3;
        }
        return if l == 3 { 4 } else { 0 };
    }
    l
}

fn place_level(a: &Prepared, b: &Prepared) -> u8 {
    let (za, zb) = (a.get(Slot::Zip), b.get(Slot::Zip));
    let (ca, cb) = (a.get(Slot::City), b.get(Slot::City));
    let (sa, sb) = (a.get(Slot::State), b.get(Slot::State));
    let zip = !za.is_empty() && !zb.is_empty();
    let city = !ca.is_empty() && !cb.is_empty();
    if !zip && !city {
        return 0;
    }
    let same_zip = zip && za == zb;
    let same_city = city && ca == cb;
    let same_state = !sa.is_empty() && sa == sb;
    if same_zip && same_city {
        1
    } else if same_zip {
        2
    } else if same_city && (same_state || sa.is_empty() || sb.is_empty()) {
        3
    } else if (zip && za.len() == zb.len() && one_typo(za, zb))
        || (city && jaro_winkler(ca, cb) >= 0.88)
    {
        4
    } else if same_state {
        5
    } else {
        6
    }
}

fn phone_level(a: &str, b: &str) -> u8 {
    if a.is_empty() || b.is_empty() {
        0
    } else if a == b {
        1
    } else if one_typo(a, b) {
        2
    } else {
        3
    }
}

fn email_level(a: &str, b: &str) -> u8 {
    if a.is_empty() || b.is_empty() {
        return 0;
    }
    if a == b {
        return 1;
    }
    let local = |e: &str| e.split('@').next().unwrap_or("").to_string();
    if local(a) == local(b) {
        return 2;
    }
    if jaro_winkler(a, b) >= 0.90 { 3 } else { 4 }
}

fn identifier_level(a: &Prepared, b: &Prepared) -> u8 {
    use level::*;
    let mut best = MISSING;
    for (sa, va) in a.identifiers() {
        for (sb, vb) in b.identifiers() {
            if sa != sb {
                continue;
            }
            let l = if va == vb {
                ID_SAME
            } else if one_typo(va, vb) {
                ID_ONE_TYPO
            } else {
                ID_DIFFERENT
            };
            if best == MISSING || l < best {
                best = l;
            }
        }
    }
    best
}

/// The comparison vector of two prepared records: one level per field of [`FIELDS`].
pub fn compare(a: &Prepared, b: &Prepared) -> [u8; NF] {
    let sex = match (a.sex, b.sex) {
        (0, _) | (_, 0) => 0,
        (x, y) if x == y => 1,
        _ => 2,
    };
    [
        given_level(a, b),
        family_level(a, b),
        dob_level(a.dob, b.dob),
        sex,
        street_level(a, b),
        line2_level(a, b),
        place_level(a, b),
        phone_level(a.get(Slot::Phone), b.get(Slot::Phone)),
        email_level(a.get(Slot::Email), b.get(Slot::Email)),
        identifier_level(a, b),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(given: &str, family: &str, dob: &str) -> Prepared {
        Prepared::new(&Record {
            given: vec![given.into()],
            family: family.into(),
            birth_date: Some(dob.into()),
            ..Record::default()
        })
    }

    #[test]
    fn name_levels() {
        let g = Field::Given.index();
        let f = Field::Family.index();
        assert_eq!(
            compare(
                &rec("Bob", "Smith", "1970"),
                &rec("Robert", "Smith", "1970")
            )[g],
            level::GIVEN_NICKNAME
        );
        assert_eq!(
            compare(
                &rec("Liz", "Smith", "1970"),
                &rec("Elizabeth", "Smith", "1970")
            )[g],
            level::GIVEN_NICKNAME
        );
        assert_eq!(
            compare(&rec("Jon", "Smith", "1970"), &rec("John", "Smith", "1970"))[g],
            level::GIVEN_NICKNAME
        );
        assert_eq!(
            compare(&rec("Smith", "John", "1970"), &rec("John", "Smith", "1970"))[g],
            level::NAME_SWAPPED
        );
        assert_eq!(
            compare(&rec("Smith", "John", "1970"), &rec("John", "Smith", "1970"))[f],
            level::NAME_SWAPPED
        );
        assert_eq!(
            compare(
                &rec("Ana", "Garcia-Lopez", "1970"),
                &rec("Ana", "Garcia", "1970")
            )[f],
            level::FAMILY_COMPOUND
        );
        assert_eq!(
            compare(
                &rec("Ana", "Garcia Lopez", "1970"),
                &rec("Ana", "Garcia-Lopez", "1970")
            )[f],
            level::NAME_EXACT
        );
        assert_eq!(
            compare(&rec("Ana", "Smyth", "1970"), &rec("Ana", "Smith", "1970"))[f],
            level::NAME_PHONETIC
        );
        assert_eq!(
            compare(
                &rec("Catherine", "Smith", "1970"),
                &rec("Kathryn", "Smith", "1970")
            )[g],
            level::GIVEN_NICKNAME
        );
    }

    #[test]
    fn date_levels() {
        let d = Field::BirthDate.index();
        let lvl = |a: &str, b: &str| compare(&rec("a", "b", a), &rec("a", "b", b))[d];
        assert_eq!(lvl("1980-04-07", "1980-04-07"), level::DOB_EXACT);
        assert_eq!(
            lvl("1980-04-07", "1980-07-04"),
            level::DOB_DAY_MONTH_SWAPPED
        );
        assert_eq!(lvl("1980-04-07", "1981-04-07"), level::DOB_ONE_DIGIT);
        assert_eq!(lvl("1980-04-07", "1980-11-23"), level::DOB_YEAR_ONLY);
        assert_eq!(lvl("1980-04-07", "1980"), level::DOB_YEAR_ONLY);
        assert_eq!(lvl("1980-04-07", "2005-04-07"), level::DOB_DIFFERENT);
    }

    #[test]
    fn typos() {
        assert!(one_typo("12345", "12355"));
        assert!(one_typo("12345", "12354"));
        assert!(one_typo("12345", "1245"));
        assert!(!one_typo("12345", "54321"));
    }
}
