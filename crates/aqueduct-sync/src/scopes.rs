//! Does a granted SMART scope set let us read a resource type? Servers that narrow a grant
//! (a type silently dropped) often answer the type's searches with an empty 200: checking the
//! grant is the only way to tell "no data" from "not allowed to see the data".

/// True when one of `scopes` allows reading/searching `resource_type`:
/// `{patient|user|system}/{Type|*}.{read|*|v2 permissions with r or s}`, constraints after
/// `?` ignored. Scopes that are not resource scopes (`openid`, `launch`...) allow nothing.
pub fn scopes_cover(scopes: &[String], resource_type: &str) -> bool {
    scopes.iter().any(|s| scope_covers(s, resource_type))
}

fn scope_covers(scope: &str, resource_type: &str) -> bool {
    let scope = scope.split('?').next().unwrap_or("");
    let Some((ctx, rest)) = scope.split_once('/') else {
        return false;
    };
    if !matches!(ctx, "patient" | "user" | "system") {
        return false;
    }
    let Some((rtype, perm)) = rest.split_once('.') else {
        return false;
    };
    if rtype != "*" && rtype != resource_type {
        return false;
    }
    match perm {
        "read" | "*" => true,
        "write" => false,
        v2 => {
            !v2.is_empty()
                && v2.chars().all(|c| "cruds".contains(c))
                && (v2.contains('r') || v2.contains('s'))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn s(v: &[&str]) -> Vec<String> {
        v.iter().map(|x| x.to_string()).collect()
    }

    #[test]
    fn wildcards_and_types() {
        assert!(scopes_cover(&s(&["system/*.read"]), "Observation"));
        assert!(scopes_cover(&s(&["patient/*.rs"]), "Observation"));
        assert!(scopes_cover(
            &s(&["openid", "patient/Observation.read"]),
            "Observation"
        ));
        assert!(scopes_cover(
            &s(&["user/Observation.rs?category=laboratory"]),
            "Observation"
        ));
        assert!(!scopes_cover(
            &s(&["patient/Condition.read"]),
            "Observation"
        ));
        assert!(!scopes_cover(
            &s(&["patient/*.write", "patient/*.cud"]),
            "Observation"
        ));
        assert!(!scopes_cover(
            &s(&["openid", "fhirUser", "launch/patient"]),
            "Observation"
        ));
        assert!(!scopes_cover(&[], "Observation"));
    }

    proptest! {
        #[test]
        fn scope_parsing_never_panics(v in proptest::collection::vec(".*", 0..5), t in "[A-Za-z]{0,12}") {
            let _ = scopes_cover(&v, &t);
        }
    }
}
