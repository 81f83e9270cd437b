//! Normalizers: each turns one field as a source wrote it into the form comparisons use. None of
//! them panics or fails: a value that cannot be read becomes empty (missing), which weighs
//! nothing either way.

/// Longest value kept from any one field (in bytes, after normalization); longer input is cut,
/// so a hostile record cannot make a comparison slow.
pub const MAX_FIELD: usize = 120;

/// Folds a letter with a diacritic to its ASCII base letter; anything else unchanged.
fn fold(c: char) -> char {
    match c {
        'à' | 'á' | 'â' | 'ã' | 'ä' | 'å' | 'ā' | 'ą' => 'a',
        'ç' | 'ć' | 'č' => 'c',
        'ď' | 'đ' => 'd',
        'è' | 'é' | 'ê' | 'ë' | 'ē' | 'ę' | 'ě' => 'e',
        'ì' | 'í' | 'î' | 'ï' | 'ī' => 'i',
        'ł' | 'ľ' => 'l',
        'ñ' | 'ń' | 'ň' => 'n',
        'ò' | 'ó' | 'ô' | 'õ' | 'ö' | 'ø' | 'ō' | 'ő' => 'o',
        'ř' => 'r',
        'ś' | 'š' | 'ş' => 's',
        'ť' | 'ţ' => 't',
        'ù' | 'ú' | 'û' | 'ü' | 'ū' | 'ů' | 'ű' => 'u',
        'ý' | 'ÿ' => 'y',
        'ź' | 'ż' | 'ž' => 'z',
        'ß' => 's',
        other => other,
    }
}

/// Lower-case ASCII words: diacritics folded, apostrophes dropped (O'Brien → obrien), every
/// other non-alphanumeric character a separator.
pub fn words(input: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut total = 0usize;
    for c in input.chars() {
        if total >= MAX_FIELD {
            break;
        }
        let c = fold(c.to_lowercase().next().unwrap_or(c));
        if c == '\'' || c == '’' || c == '`' {
            continue;
        }
        if c.is_ascii_alphanumeric() {
            cur.push(c);
            total += 1;
        } else if !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
            total += 1;
        }
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

const NAME_NOISE: &[&str] = &[
    "jr", "sr", "ii", "iii", "iv", "mr", "mrs", "ms", "miss", "dr", "md", "phd",
];

/// A name as comparable words: letters only, titles and generational suffixes dropped.
pub fn name_words(input: &str) -> Vec<String> {
    words(input)
        .into_iter()
        .map(|w| {
            w.chars()
                .filter(char::is_ascii_alphabetic)
                .collect::<String>()
        })
        .filter(|w| !w.is_empty() && !NAME_NOISE.contains(&w.as_str()))
        .collect()
}

/// Street-type, direction and unit abbreviations, expanded to one spelling.
const STREET_WORDS: &[(&str, &str)] = &[
    ("st", "street"),
    ("str", "street"),
    ("ave", "avenue"),
    ("av", "avenue"),
    ("rd", "road"),
    ("dr", "drive"),
    ("ln", "lane"),
    ("blvd", "boulevard"),
    ("ct", "court"),
    ("crt", "court"),
    ("pl", "place"),
    ("cres", "crescent"),
    ("cir", "circuit"),
    ("cct", "circuit"),
    ("hwy", "highway"),
    ("pkwy", "parkway"),
    ("pde", "parade"),
    ("tce", "terrace"),
    ("ter", "terrace"),
    ("sq", "square"),
    ("cl", "close"),
    ("mt", "mount"),
    ("n", "north"),
    ("s", "south"),
    ("e", "east"),
    ("w", "west"),
    ("ne", "northeast"),
    ("nw", "northwest"),
    ("se", "southeast"),
    ("sw", "southwest"),
];

const UNIT_WORDS: &[&str] = &[
    "apt",
    "apartment",
    "unit",
    "ste",
    "suite",
    "flat",
    "no",
    "rm",
    "room",
    "lot",
];

/// A street address line split into house number, street and unit.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StreetLine {
    pub number: String,
    pub street: String,
    pub unit: String,
}

/// Normalizes one street line: abbreviations expanded (St → street), the unit (Apt 4B, #4B,
/// Unit 4B) taken out, the leading house number separated.
pub fn street_line(input: &str) -> StreetLine {
    // `#12` is a unit even when glued to the number; make `#` a token of its own.
    let spaced = input.replace('#', " # ");
    let mut toks: Vec<String> = Vec::new();
    for t in spaced.split(|c: char| c.is_whitespace() || c == ',') {
        if toks.len() > 24 {
            break;
        }
        if t == "#" {
            toks.push("#".to_string());
        } else {
            toks.extend(words(t));
        }
    }
    let mut out = StreetLine::default();
    let mut street: Vec<&str> = Vec::new();
    let mut i = 0usize;
    while i < toks.len() {
        let w = toks[i].as_str();
        let marker = w == "#" || UNIT_WORDS.contains(&w);
        if marker && i + 1 < toks.len() {
            out.unit = toks[i + 1].clone();
            i += 2;
            continue;
        }
        if w == "#" {
            i += 1;
            continue;
        }
        if i == 0 && w.starts_with(|c: char| c.is_ascii_digit()) {
            out.number = w.to_string();
            i += 1;
            continue;
        }
        let expanded = STREET_WORDS
            .iter()
            .find(|(abbr, _)| *abbr == w)
            .map_or(w, |(_, full)| *full);
        street.push(expanded);
        i += 1;
    }
    out.street = street.join(" ");
    out
}

/// Digits only, at most the first five (ZIP5; shorter postcodes stay as they are).
pub fn zip5(input: &str) -> String {
    input.chars().filter(char::is_ascii_digit).take(5).collect()
}

/// E.164 form of a phone number: `+` and up to 15 digits. Ten digits without a country code
/// are read as North American (+1). Fewer than seven digits is no usable number (empty).
pub fn phone_e164(input: &str) -> String {
    let trimmed = input.trim();
    let plus = trimmed.starts_with('+');
    let digits: String = trimmed
        .chars()
        .take(64)
        .filter(char::is_ascii_digit)
        .collect();
    let digits = if !plus && digits.starts_with("00") {
        digits[2..].to_string()
    } else {
        digits
    };
    let international = plus || trimmed.starts_with("00");
    if digits.len() < 7 {
        return String::new();
    }
    let body: String = if international {
        digits
    } else if digits.len() == 10 {
        format!("1{digits}")
    } else {
        digits
    };
    let body: String = body.chars().take(15).collect();
    format!("+{body}")
}

/// An email address, trimmed and lower-cased; empty when it has no `@` with text on both sides.
pub fn email(input: &str) -> String {
    let e: String = input
        .trim()
        .to_lowercase()
        .chars()
        .take(MAX_FIELD)
        .collect();
    match e.split_once('@') {
        Some((local, domain)) if !local.is_empty() && !domain.is_empty() => e,
        _ => String::new(),
    }
}

/// A birth date as `YYYYMMDD` in a `u32`, month or day 0 when the source gave only the year or
/// the month (FHIR allows `1980` and `1980-04`). Accepts `YYYY-MM-DD`, `YYYYMMDD`, `YYYY-MM`,
/// `YYYY` and a date-time (the time is ignored). The digits are kept even when they are no real
/// date (a source's typo in the month is still evidence); anything else is `None`.
pub fn birth_date(input: &str) -> Option<u32> {
    let s = input.trim();
    let s = s.split('T').next().unwrap_or(s);
    let digits: String = s.chars().filter(char::is_ascii_digit).collect();
    if digits.len() != s.chars().filter(|c| *c != '-' && *c != '/').count() {
        return None;
    }
    let parse = |d: &str| d.parse::<u32>().ok();
    match digits.len() {
        8 => parse(&digits),
        6 => parse(&digits).map(|v| v * 100),
        4 => parse(&digits).map(|v| v * 10_000),
        _ => None,
    }
}

/// An identifier's system and value as compared: system trimmed, value without spaces or
/// dashes and upper-cased (MRN `00-123 4` equals `001234`).
pub fn identifier(system: &str, value: &str) -> (String, String) {
    let sys: String = system.trim().chars().take(MAX_FIELD).collect();
    let val: String = value
        .chars()
        .filter(|c| !c.is_whitespace() && *c != '-')
        .take(MAX_FIELD)
        .flat_map(char::to_uppercase)
        .collect();
    (sys, val)
}

/// A city, state or other place name: lower-case words joined by one space.
pub fn place(input: &str) -> String {
    words(input).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn street_abbreviations_and_units() {
        let a = street_line("12 Main St Apt 4B");
        assert_eq!(a.number, "12");
        assert_eq!(a.street, "main street");
        assert_eq!(a.unit, "4b");
        let b = street_line("12 MAIN STREET #4b");
        assert_eq!(a, b);
        let c = street_line("12 Main Street, Unit 4B");
        assert_eq!(a, c);
    }

    #[test]
    fn phones_become_e164() {
        assert_eq!(phone_e164("(555) 123-4567"), "+15551234567");
        assert_eq!(phone_e164("+1 555 123 4567"), "+15551234567");
        assert_eq!(phone_e164("1-555-123-4567"), "+15551234567");
        assert_eq!(phone_e164("0044 20 7946 0958"), "+442079460958");
        assert_eq!(phone_e164("123"), "");
    }

    #[test]
    fn dates_in_fhir_shapes() {
        assert_eq!(birth_date("1980-04-07"), Some(19_800_407));
        assert_eq!(birth_date("19800407"), Some(19_800_407));
        assert_eq!(birth_date("1980"), Some(19_800_000));
        assert_eq!(birth_date("1980-04"), Some(19_800_400));
        assert_eq!(birth_date("1980-04-07T10:00:00Z"), Some(19_800_407));
        assert_eq!(birth_date("April 1980"), None);
    }

    #[test]
    fn names_lose_titles_and_accents() {
        assert_eq!(name_words("José O'Brien Jr."), vec!["jose", "obrien"]);
        assert_eq!(name_words("Garcia-Lopez"), vec!["garcia", "lopez"]);
    }
}
