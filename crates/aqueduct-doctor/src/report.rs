//! What a probe found, and the institution override it implies.

use serde::Serialize;

#[derive(Debug, Clone, Default, Serialize)]
pub struct SmartSummary {
    pub authorization_endpoint: Option<String>,
    pub token_endpoint: Option<String>,
    pub capabilities: Vec<String>,
    pub grant_types: Vec<String>,
    pub code_challenge_methods: Vec<String>,
    pub token_endpoint_auth_methods: Vec<String>,
}

/// How one resource type answered a search for the probe patient.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TypeProbe {
    pub resource_type: String,
    /// The CapabilityStatement lists the type.
    pub claimed: bool,
    /// A plain `patient=` search returned a Bundle.
    pub plain_search_works: bool,
    /// HTTP status (or error kind) of the plain search.
    pub plain_status: String,
    /// Categories that made a rejected search work (the server requires one).
    pub working_categories: Vec<String>,
    /// Entries on the first page.
    pub entries: u64,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct DoctorReport {
    pub base_url: String,
    pub tls: String,
    pub smart: Option<SmartSummary>,
    pub smart_error: Option<String>,
    pub fhir_version: Option<String>,
    pub software: Option<String>,
    pub claimed_types: Vec<String>,
    /// Server clock minus ours, in seconds (from the Date header).
    pub clock_skew_secs: Option<f64>,
    pub probe_patient: Option<String>,
    pub types: Vec<TypeProbe>,
    /// Types the CapabilityStatement claims whose search was rejected or failed: it lies.
    pub claimed_but_failing: Vec<String>,
    pub everything: Option<bool>,
    pub batch: Option<bool>,
    pub include: Option<bool>,
    /// The most entries the server returned for one page when asked for many.
    pub max_page_size: Option<u32>,
    /// "opaque-cursor" or "next-link", from the shape of next links.
    pub paging_style: Option<String>,
    pub rate_limit_headers: Vec<(String, String)>,
    /// Problems met while probing (each probe that could not be made).
    pub problems: Vec<String>,
}

impl DoctorReport {
    /// The observed behaviour as an institution override (same keys as a profile file), to put
    /// under the connection's `overrides` in aqueduct.toml.
    pub fn observed_profile(&self) -> toml::Table {
        let mut root = toml::Table::new();
        let mut paging = toml::Table::new();
        if let Some(n) = self.max_page_size {
            paging.insert("max_page_size".into(), toml::Value::Integer(n as i64));
        }
        if let Some(s) = &self.paging_style {
            paging.insert("style".into(), toml::Value::String(s.clone()));
        }
        if !paging.is_empty() {
            root.insert("paging".into(), toml::Value::Table(paging));
        }
        let mut caps = toml::Table::new();
        if let Some(e) = self.everything {
            caps.insert("everything".into(), toml::Value::Boolean(e));
        }
        if let Some(b) = self.batch {
            caps.insert("batch".into(), toml::Value::Boolean(b));
        }
        if !self.claimed_but_failing.is_empty() {
            caps.insert(
                "trust_capability_statement".into(),
                toml::Value::Boolean(false),
            );
        }
        if !caps.is_empty() {
            root.insert("capabilities".into(), toml::Value::Table(caps));
        }
        let mut types = toml::Table::new();
        for t in &self.types {
            if !t.plain_search_works && !t.working_categories.is_empty() {
                let mut tt = toml::Table::new();
                tt.insert(
                    "required_categories".into(),
                    toml::Value::Array(
                        t.working_categories
                            .iter()
                            .cloned()
                            .map(toml::Value::String)
                            .collect(),
                    ),
                );
                types.insert(t.resource_type.clone(), toml::Value::Table(tt));
            }
        }
        if !types.is_empty() {
            root.insert("types".into(), toml::Value::Table(types));
        }
        root
    }

    /// The report for a person.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let yn = |b: Option<bool>| match b {
            Some(true) => "yes",
            Some(false) => "no",
            None => "unknown",
        };
        o.push_str(&format!("doctor report for {}\n", self.base_url));
        o.push_str(&format!("  transport:            {}\n", self.tls));
        match (&self.smart, &self.smart_error) {
            (Some(s), _) => {
                o.push_str(&format!(
                    "  SMART:                token {} | PKCE {} | grants {}\n",
                    s.token_endpoint.as_deref().unwrap_or("-"),
                    s.code_challenge_methods.join(","),
                    s.grant_types.join(",")
                ));
                o.push_str(&format!(
                    "  SMART capabilities:   {}\n",
                    s.capabilities.join(" ")
                ));
            }
            (None, Some(e)) => {
                o.push_str(&format!("  SMART:                not discovered ({e})\n"))
            }
            _ => {}
        }
        o.push_str(&format!(
            "  FHIR:                 {} {}\n",
            self.fhir_version.as_deref().unwrap_or("?"),
            self.software.as_deref().unwrap_or("")
        ));
        if let Some(s) = self.clock_skew_secs {
            o.push_str(&format!("  clock skew:           {s:+.1} s\n"));
        }
        o.push_str(&format!(
            "  $everything {} | batch {} | _include {} | max page {} | paging {}\n",
            yn(self.everything),
            yn(self.batch),
            yn(self.include),
            self.max_page_size
                .map(|n| n.to_string())
                .unwrap_or_else(|| "?".into()),
            self.paging_style.as_deref().unwrap_or("?")
        ));
        if !self.rate_limit_headers.is_empty() {
            let h: Vec<String> = self
                .rate_limit_headers
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect();
            o.push_str(&format!("  rate-limit headers:   {}\n", h.join(", ")));
        }
        if let Some(p) = &self.probe_patient {
            o.push_str(&format!("  searches for patient {p}:\n"));
        }
        for t in &self.types {
            let verdict = if t.plain_search_works {
                format!("works ({} on first page)", t.entries)
            } else if !t.working_categories.is_empty() {
                format!("needs a category ({})", t.working_categories.join(", "))
            } else {
                format!("fails ({})", t.plain_status)
            };
            o.push_str(&format!(
                "    {:<22} {:<10} {verdict}\n",
                t.resource_type,
                if t.claimed { "claimed" } else { "unclaimed" }
            ));
        }
        if !self.claimed_but_failing.is_empty() {
            o.push_str(&format!(
                "  the CapabilityStatement claims types whose search fails: {}\n",
                self.claimed_but_failing.join(", ")
            ));
        }
        for p in &self.problems {
            o.push_str(&format!("  problem: {p}\n"));
        }
        o
    }
}
