//! Minimum-necessary scopes from the resource types a connection needs, and the check of what
//! was granted.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

/// SMART scope syntax: v1 (`patient/Observation.read`) or v2 (`patient/Observation.rs`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeVersion {
    V1,
    V2,
}

/// Whose data the scopes are about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ScopeContext {
    Patient,
    User,
    System,
}

impl ScopeContext {
    pub fn prefix(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// Which launch flow scopes are computed for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Flow {
    Standalone,
    EhrLaunch,
    Backend,
}

impl Flow {
    pub fn as_str(self) -> &'static str {
        match self {
            Flow::Standalone => "standalone",
            Flow::EhrLaunch => "ehr-launch",
            Flow::Backend => "backend",
        }
    }
}

/// Read (and search) scopes for each resource type, plus the launch/identity scopes the flow
/// needs. Types are de-duplicated and sorted so the request is stable.
pub fn compute_scopes(
    resource_types: &[String],
    context: ScopeContext,
    version: ScopeVersion,
    flow: Flow,
    openid: bool,
    offline_access: bool,
) -> Vec<String> {
    let types: BTreeSet<&str> = resource_types
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .collect();
    let suffix = match version {
        ScopeVersion::V1 => "read",
        ScopeVersion::V2 => "rs",
    };
    let mut out: Vec<String> = types
        .iter()
        .map(|t| format!("{}/{}.{}", context.prefix(), t, suffix))
        .collect();
    match flow {
        Flow::Standalone => {
            if context == ScopeContext::Patient {
                out.push("launch/patient".into());
            }
        }
        Flow::EhrLaunch => out.push("launch".into()),
        Flow::Backend => {}
    }
    if flow != Flow::Backend {
        if openid {
            out.push("openid".into());
            out.push("fhirUser".into());
        }
        if offline_access {
            out.push("offline_access".into());
        }
    }
    out
}

/// One parsed resource scope.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ResourceScope {
    context: String,
    resource_type: String,
    read: bool,
}

fn parse_resource_scope(s: &str) -> Option<ResourceScope> {
    let (context, rest) = s.split_once('/')?;
    if !matches!(context, "patient" | "user" | "system") {
        return None;
    }
    let (resource_type, perm) = rest.split_once('.')?;
    // v2 scopes may carry a query restriction: `patient/Observation.rs?category=laboratory`.
    let perm = perm.split('?').next().unwrap_or_default();
    let read = match perm {
        "read" | "*" => true,
        "write" => false,
        // v2: a subset of "cruds" in order
        p => {
            !p.is_empty()
                && p.chars().all(|c| "cruds".contains(c))
                && (p.contains('r') || p.contains('s'))
        }
    };
    if resource_type.is_empty() {
        return None;
    }
    Some(ResourceScope {
        context: context.to_string(),
        resource_type: resource_type.to_string(),
        read,
    })
}

/// The scopes a token was granted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantedScopes {
    scopes: Vec<String>,
}

impl GrantedScopes {
    /// Parses an OAuth `scope` string (space separated). Never fails.
    pub fn parse(scope: &str) -> Self {
        GrantedScopes {
            scopes: scope.split_whitespace().map(str::to_string).collect(),
        }
    }

    pub fn from_list(scopes: &[String]) -> Self {
        GrantedScopes {
            scopes: scopes.to_vec(),
        }
    }

    pub fn as_slice(&self) -> &[String] {
        &self.scopes
    }

    pub fn contains(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }

    /// The scope string as it would go on the wire.
    pub fn to_scope_string(&self) -> String {
        self.scopes.join(" ")
    }

    /// True when some granted scope (any context, `*` wildcard included) allows reading
    /// `resource_type`.
    pub fn covers(&self, resource_type: &str) -> bool {
        self.scopes
            .iter()
            .filter_map(|s| parse_resource_scope(s))
            .any(|r| r.read && (r.resource_type == resource_type || r.resource_type == "*"))
    }

    /// The requested resource types that no granted scope covers.
    pub fn uncovered(&self, resource_types: &[String]) -> Vec<String> {
        let set: BTreeSet<&String> = resource_types.iter().collect();
        set.into_iter()
            .filter(|t| !self.covers(t))
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(xs: &[&str]) -> Vec<String> {
        xs.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn computes_v1_and_v2() {
        let s = compute_scopes(
            &v(&["Observation", "Patient", "Observation"]),
            ScopeContext::Patient,
            ScopeVersion::V1,
            Flow::Standalone,
            true,
            true,
        );
        assert_eq!(
            s,
            v(&[
                "patient/Observation.read",
                "patient/Patient.read",
                "launch/patient",
                "openid",
                "fhirUser",
                "offline_access"
            ])
        );
        let s = compute_scopes(
            &v(&["Observation"]),
            ScopeContext::System,
            ScopeVersion::V2,
            Flow::Backend,
            true,
            true,
        );
        assert_eq!(s, v(&["system/Observation.rs"]));
    }

    #[test]
    fn covers_and_uncovered() {
        let g = GrantedScopes::parse(
            "patient/Observation.rs?category=laboratory patient/Patient.read launch/patient patient/Condition.write user/*.cruds",
        );
        assert!(g.covers("Observation"));
        assert!(g.covers("Patient"));
        assert!(g.covers("Anything"));
        let g = GrantedScopes::parse("patient/Observation.c patient/Patient.r openid");
        assert!(!g.covers("Observation"));
        assert!(g.covers("Patient"));
        assert_eq!(
            g.uncovered(&v(&["Patient", "Observation", "Condition"])),
            v(&["Condition", "Observation"])
        );
    }
}
