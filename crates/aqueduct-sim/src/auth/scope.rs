//! SMART scopes, v1 (`patient/Observation.read`) and v2 (`patient/Observation.rs`), and what a
//! granted set allows.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Context {
    Patient,
    User,
    System,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceScope {
    pub context: Context,
    pub rtype: String,
    pub read: bool,
    pub search: bool,
    pub v2: bool,
}

/// Parse a resource scope; `None` for non-resource scopes (openid, launch, ...).
pub fn parse(scope: &str) -> Option<ResourceScope> {
    let (ctx, rest) = scope.split_once('/')?;
    let context = match ctx {
        "patient" => Context::Patient,
        "user" => Context::User,
        "system" => Context::System,
        _ => return None,
    };
    let (rtype, perm) = rest.split_once('.')?;
    // v2 allows a query suffix (`?category=...`); granting the whole type is the lenient reading.
    let perm = perm.split('?').next().unwrap_or("");
    let (read, search, v2) = match perm {
        "read" | "*" => (true, true, false),
        "write" => (false, false, false),
        p if !p.is_empty() && p.chars().all(|c| "cruds".contains(c)) => {
            (p.contains('r'), p.contains('s'), true)
        }
        _ => return None,
    };
    if rtype.is_empty() || !(rtype == "*" || rtype.chars().all(|c| c.is_ascii_alphabetic())) {
        return None;
    }
    Some(ResourceScope {
        context,
        rtype: rtype.to_string(),
        read,
        search,
        v2,
    })
}

/// What a token may see of one resource type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Access {
    Full,
    /// Only the compartment of this patient.
    Patient(String),
    Denied,
}

pub fn access(scopes: &[String], patient: Option<&str>, rtype: &str, search: bool) -> Access {
    let mut patient_ok = false;
    for s in scopes.iter().filter_map(|s| parse(s)) {
        let type_ok = s.rtype == "*" || s.rtype == rtype;
        let perm_ok = if search { s.search } else { s.read };
        if !(type_ok && perm_ok) {
            continue;
        }
        match s.context {
            Context::User | Context::System => return Access::Full,
            Context::Patient => patient_ok = true,
        }
    }
    match (patient_ok, patient) {
        (true, Some(p)) => Access::Patient(p.to_string()),
        _ => Access::Denied,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_scopes_parse() {
        let v1 = parse("patient/Observation.read").expect("v1");
        assert!(v1.read && v1.search && !v1.v2);
        let v2 = parse("patient/Observation.rs").expect("v2");
        assert!(v2.read && v2.search && v2.v2);
        let r_only = parse("system/*.r").expect("r");
        assert!(r_only.read && !r_only.search);
        assert!(parse("openid").is_none());
        assert!(parse("patient/Observation.xyz").is_none());
    }

    #[test]
    fn patient_scopes_restrict_to_the_compartment() {
        let s = vec!["patient/*.read".to_string()];
        assert_eq!(
            access(&s, Some("p1"), "Observation", true),
            Access::Patient("p1".into())
        );
        assert_eq!(access(&s, None, "Observation", true), Access::Denied);
        let s = vec!["system/Observation.rs".to_string()];
        assert_eq!(access(&s, None, "Observation", true), Access::Full);
        assert_eq!(access(&s, None, "Condition", true), Access::Denied);
    }
}
