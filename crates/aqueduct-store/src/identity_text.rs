//! How both backends write the lists of an identity event and order a pair.

/// Persons of an event as `,1,5,`: a person is found with `LIKE '%,5,%'`.
pub(crate) fn persons_text(persons: &[i64]) -> String {
    let mut s = String::from(",");
    for p in persons {
        s.push_str(&p.to_string());
        s.push(',');
    }
    s
}

pub(crate) fn parse_persons(s: &str) -> Vec<i64> {
    s.split(',').filter_map(|p| p.parse().ok()).collect()
}

pub(crate) fn records_text(records: &[String]) -> String {
    serde_json::to_string(records).unwrap_or_else(|_| "[]".to_string())
}

pub(crate) fn parse_records(s: &str) -> Vec<String> {
    serde_json::from_str(s).unwrap_or_default()
}

pub(crate) fn ordered<'a>(a: &'a str, b: &'a str) -> (&'a str, &'a str) {
    if a <= b { (a, b) } else { (b, a) }
}
