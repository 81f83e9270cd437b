//! Facade ids: `{connection}.{source id}`, so ids that collide across sources never clash.
//! Connection names hold no dot, source ids may (Epic's do): the first dot separates them.

/// The facade id of a source's resource.
pub fn facade_id(connection: &str, id: &str) -> String {
    format!("{connection}.{id}")
}

/// `(connection, source id)` of a facade id; None for anything that is not one (path
/// traversal, empty parts, characters FHIR ids cannot hold).
pub fn split(facade: &str) -> Option<(&str, &str)> {
    if facade.len() > 256 {
        return None;
    }
    let (conn, id) = facade.split_once('.')?;
    let conn_ok = !conn.is_empty()
        && conn
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    let id_ok = !id.is_empty()
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        && !id.contains("..");
    (conn_ok && id_ok).then_some((conn, id))
}

/// A resource type name as FHIR spells them (`Observation`), nothing else.
pub fn valid_type(t: &str) -> bool {
    let mut b = t.bytes();
    matches!(b.next(), Some(c) if c.is_ascii_uppercase())
        && t.len() <= 64
        && b.all(|c| c.is_ascii_alphabetic())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_junk_is_refused() {
        assert_eq!(
            split(&facade_id("epic", "eM5.x-1")),
            Some(("epic", "eM5.x-1"))
        );
        for bad in [
            "",
            ".",
            "epic.",
            ".x",
            "epic/x",
            "epic...",
            "e p.x",
            "epic.a..b",
            "../x.y",
        ] {
            assert!(split(bad).is_none(), "{bad:?}");
        }
        assert!(valid_type("Observation"));
        assert!(!valid_type("observation") && !valid_type("Obs1") && !valid_type(""));
    }
}
