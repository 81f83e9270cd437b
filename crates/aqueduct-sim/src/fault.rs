//! Injected faults. Each is written `name[:param][@rate]`, e.g. `server-error-500@0.1`
//! (10 % of FHIR requests), `timeout:2` (sleep 2 s), `token-expires-mid-sync:5` (tokens die
//! after 5 FHIR requests). Without `@rate` a fault fires on every request it applies to.
//! Whether a fault fires is a pure function of (seed, fault name, per-fault request counter),
//! so a run is reproducible when requests arrive in the same order.

use std::fmt;
use std::str::FromStr;

use sha2::{Digest, Sha256};

use crate::SimError;

macro_rules! faults {
    ($( $(#[$doc:meta])* $var:ident => $name:literal ),* $(,)?) => {
        /// A fault the simulator injects into FHIR responses.
        #[derive(Debug, Clone, PartialEq)]
        pub enum Fault {
            $( $(#[$doc])* $var { rate: f64 }, )*
            /// `timeout[:secs]`: sleep (default 30 s) before answering.
            Timeout { rate: f64, secs: f64 },
            /// `token-expires-mid-sync[:n]`: access tokens stop working after n FHIR requests (default 5).
            TokenExpiresMidSync { after_requests: u64 },
            /// `huge-body[:MB]`: a search answered with a streamed Bundle of MB megabytes
            /// (default 1024), generated while it is sent.
            HugeBody { rate: f64, mb: f64 },
            /// `huge-binary[:MB]`: a Binary read answered with MB megabytes (default 1024), streamed.
            HugeBinary { rate: f64, mb: f64 },
            /// `stall-page[:secs]`: a search page whose headers arrive at once and whose body
            /// trickles one byte every secs seconds (default 5).
            StallPage { rate: f64, secs: f64 },
            /// `stall-headers[:secs]`: nothing at all for secs seconds (default 600), then the
            /// connection is closed.
            StallHeaders { rate: f64, secs: f64 },
        }

        impl Fault {
            /// The kebab-case name used by `FromStr` and `Display`.
            pub fn name(&self) -> &'static str {
                match self {
                    $( Fault::$var { .. } => $name, )*
                    Fault::Timeout { .. } => "timeout",
                    Fault::TokenExpiresMidSync { .. } => "token-expires-mid-sync",
                    Fault::HugeBody { .. } => "huge-body",
                    Fault::HugeBinary { .. } => "huge-binary",
                    Fault::StallPage { .. } => "stall-page",
                    Fault::StallHeaders { .. } => "stall-headers",
                }
            }

            /// Fraction of eligible requests the fault fires on.
            pub fn rate(&self) -> f64 {
                match self {
                    $( Fault::$var { rate } => *rate, )*
                    Fault::Timeout { rate, .. }
                    | Fault::HugeBody { rate, .. }
                    | Fault::HugeBinary { rate, .. }
                    | Fault::StallPage { rate, .. }
                    | Fault::StallHeaders { rate, .. } => *rate,
                    Fault::TokenExpiresMidSync { .. } => 1.0,
                }
            }

            /// Every fault name, for help texts.
            pub fn all_names() -> &'static [&'static str] {
                &[$( $name, )* "timeout", "token-expires-mid-sync", "huge-body", "huge-binary", "stall-page", "stall-headers"]
            }

            fn with_rate(name: &str, rate: f64, param: Option<f64>) -> Option<Fault> {
                match name {
                    $( $name => Some(Fault::$var { rate }), )*
                    "timeout" => Some(Fault::Timeout { rate, secs: param.unwrap_or(30.0) }),
                    "token-expires-mid-sync" => Some(Fault::TokenExpiresMidSync {
                        after_requests: param.map(|p| p as u64).unwrap_or(5).max(1),
                    }),
                    "huge-body" => Some(Fault::HugeBody { rate, mb: param.unwrap_or(1024.0) }),
                    "huge-binary" => Some(Fault::HugeBinary { rate, mb: param.unwrap_or(1024.0) }),
                    "stall-page" => Some(Fault::StallPage { rate, secs: param.unwrap_or(5.0) }),
                    "stall-headers" => Some(Fault::StallHeaders { rate, secs: param.unwrap_or(600.0) }),
                    _ => None,
                }
            }
        }
    };
}

faults! {
    /// 429 with `Retry-After: 1`.
    RateLimit429 => "rate-limit-429",
    /// 429 with `X-RateLimit-Limit/Remaining/Reset` and no `Retry-After`.
    RateLimitHeaders => "rate-limit-headers",
    /// 503 with `Retry-After: 1`.
    Unavailable503 => "unavailable-503",
    /// 500 with an OperationOutcome.
    ServerError500 => "server-error-500",
    /// Connection closed without a usable response.
    DropConnection => "drop-connection",
    /// A JSON body cut in half (Content-Length matches the cut body).
    TruncatedBody => "truncated-body",
    /// A body that is not JSON at all.
    InvalidJson => "invalid-json",
    /// 200 searchset with no entries although the search has matches.
    EmptyBundle => "empty-bundle",
    /// A searchset carrying an OperationOutcome entry (search.mode = outcome).
    OutcomeInBundle => "outcome-in-bundle",
    /// The next link points to a URL that answers 404.
    BrokenNextLink => "broken-next-link",
    /// The next link equals the self link.
    LoopingNextLink => "looping-next-link",
    /// Page 2 and later answer 500.
    ErrorMidPaging => "error-mid-paging",
    /// Each page after the first repeats the last two entries of the previous one.
    DuplicateEntries => "duplicate-entries",
    /// Resources in searchsets have no `id` (and entries no fullUrl).
    MissingIds => "missing-ids",
    /// The CapabilityStatement claims types and search parameters that answer 404/400.
    LyingCapability => "lying-capability",
    /// Data frozen at its first version: updates, creations and deletions are invisible.
    StaleData => "stale-data",
    /// An HTML error page with status 200 and Content-Type text/html.
    HtmlError200 => "html-error-200",
    /// Searches answer 302 to another origin (the simulator's foreign listener), which serves
    /// a bogus Bundle and records the request headers it received.
    RedirectCrossOrigin => "redirect-cross-origin",
    /// Every search page is empty and carries a fresh next link (ends after 100,000 pages).
    EndlessEmptyPages => "endless-empty-pages",
    /// Next links change on every page while the page repeats the same entries (ends after
    /// 100,000 pages).
    CursorRepeat => "cursor-repeat",
    /// A 200 searchset holding one resource plus an OperationOutcome entry of severity
    /// `error` ("results truncated") and no next link.
    ErrorOutcomeInBundle => "error-outcome-in-bundle",
    /// `/metadata` answers 500.
    Metadata500 => "metadata-500",
    /// `/metadata` answers 404.
    Metadata404 => "metadata-404",
    /// Bulk status polls answer 500 with an OperationOutcome of code `transient` (the job
    /// goes on; a client retries).
    BulkStatus5xx => "bulk-status-5xx",
    /// Bulk status polls and file downloads answer 429 with `Retry-After: 1`.
    Bulk429 => "bulk-429",
    /// The first export job's files of its first type answer 410 Gone (expired); a new
    /// kick-off is served normally.
    BulkExpiredFiles => "bulk-expired-files",
    /// The first output file of every job ends in the middle of its last line.
    BulkTruncatedFile => "bulk-truncated-file",
    /// The first output file of every job carries two lines that are not resources (one not
    /// JSON, one without `resourceType`) and a blank line, besides its resources.
    BulkInvalidLines => "bulk-invalid-lines",
    /// Export jobs fail: status polls answer 500 with an error OperationOutcome.
    BulkJobFails => "bulk-job-fails",
}

impl FromStr for Fault {
    type Err = SimError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let bad = || SimError::InvalidFault(s.to_string());
        let (head, rate) = match s.split_once('@') {
            Some((h, r)) => {
                let r: f64 = r.parse().map_err(|_| bad())?;
                if !(0.0..=1.0).contains(&r) {
                    return Err(bad());
                }
                (h, r)
            }
            None => (s, 1.0),
        };
        let (name, param) = match head.split_once(':') {
            Some((n, p)) => {
                let v = p.trim_end_matches('s').parse::<f64>().map_err(|_| bad())?;
                if !v.is_finite() || v < 0.0 {
                    return Err(bad());
                }
                (n, Some(v))
            }
            None => (head, None),
        };
        Fault::with_rate(name, rate, param).ok_or_else(bad)
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())?;
        match self {
            Fault::Timeout { secs, .. } => write!(f, ":{secs}")?,
            Fault::TokenExpiresMidSync { after_requests } => write!(f, ":{after_requests}")?,
            Fault::HugeBody { mb, .. } | Fault::HugeBinary { mb, .. } => write!(f, ":{mb}")?,
            Fault::StallPage { secs, .. } | Fault::StallHeaders { secs, .. } => {
                write!(f, ":{secs}")?
            }
            _ => {}
        }
        if self.rate() < 1.0 {
            write!(f, "@{}", self.rate())?;
        }
        Ok(())
    }
}

/// Deterministic coin: does the n-th eligible request for this fault get it?
pub fn fires(seed: u64, name: &str, n: u64, rate: f64) -> bool {
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let mut h = Sha256::new();
    h.update(seed.to_le_bytes());
    h.update(name.as_bytes());
    h.update(n.to_le_bytes());
    let d = h.finalize();
    let mut b = [0u8; 8];
    b.copy_from_slice(&d[..8]);
    (u64::from_le_bytes(b) as f64 / u64::MAX as f64) < rate
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for name in Fault::all_names() {
            let f: Fault = name.parse().expect(name);
            assert!(f.to_string().starts_with(name));
        }
        let f: Fault = "server-error-500@0.1".parse().expect("parse");
        assert_eq!(f, Fault::ServerError500 { rate: 0.1 });
        assert_eq!(f.to_string(), "server-error-500@0.1");
        let t: Fault = "timeout:2@0.5".parse().expect("parse");
        assert_eq!(
            t,
            Fault::Timeout {
                rate: 0.5,
                secs: 2.0
            }
        );
        assert!("nonsense".parse::<Fault>().is_err());
        assert!("server-error-500@2".parse::<Fault>().is_err());
    }

    #[test]
    fn rate_is_roughly_respected_and_deterministic() {
        let hits = (0..10_000).filter(|n| fires(7, "x", *n, 0.1)).count();
        assert!((800..1200).contains(&hits), "{hits}");
        let again = (0..10_000).filter(|n| fires(7, "x", *n, 0.1)).count();
        assert_eq!(hits, again);
    }
}
