//! Dashboard sessions, held by the server: a random 256-bit id in an HttpOnly, SameSite=Strict
//! cookie (Secure when served over TLS) names a session that expires after a while idle and
//! after a fixed lifetime, whatever happens. Each session has its own CSRF token, which every
//! form posts back (a synchronizer token). Sessions live in memory: a restart signs everyone
//! out, which is the safe way to lose them.
//!
//! Wrong admin passwords are counted ([`Throttle`]): past a few a minute, password sign-in is
//! refused for everyone until the minute is over (an API key cannot be guessed; a password
//! can).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::http::HeaderMap;
use axum::http::header::COOKIE;
use base64::Engine as _;

use crate::auth::Principal;

pub const SESSION_COOKIE: &str = "aqueduct_session";
/// The login form's double-submit cookie (there is no session yet to hold a token).
pub const LOGIN_COOKIE: &str = "aqueduct_login";

/// Signed out after this long without a request.
pub const IDLE: Duration = Duration::from_secs(30 * 60);
/// Signed out this long after signing in, however busy.
pub const LIFETIME: Duration = Duration::from_secs(12 * 60 * 60);
/// Sessions held at most; beyond it the oldest is dropped.
const MAX_SESSIONS: usize = 10_000;

/// A signed-in person.
#[derive(Debug, Clone)]
pub struct Session {
    pub principal: Principal,
    /// The API key's id, checked against the store on every request (a revoked key ends
    /// its sessions at once); None for the admin password.
    pub key_id: Option<String>,
    pub csrf: String,
    created: Instant,
    seen: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

/// 32 random bytes, base64url: a session id or a token nobody can guess.
pub fn random_token() -> Option<String> {
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).ok()?;
    Some(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b))
}

/// Equal strings, compared in constant time.
pub fn same(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.trim())
}

/// A `Set-Cookie` value: HttpOnly, SameSite=Strict, scoped to the dashboard, Secure over TLS.
pub fn set_cookie(name: &str, value: &str, max_age: Duration, secure: bool) -> String {
    format!(
        "{name}={value}; Path=/dashboard; Max-Age={}; HttpOnly; SameSite=Strict{}",
        max_age.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

impl Sessions {
    /// A new session for `principal`: its id (for the cookie), or None if the system's random
    /// source failed.
    pub fn create(
        &self,
        principal: Principal,
        key_id: Option<String>,
    ) -> Option<(String, Session)> {
        let id = random_token()?;
        let now = Instant::now();
        let s = Session {
            principal,
            key_id,
            csrf: random_token()?,
            created: now,
            seen: now,
        };
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() >= MAX_SESSIONS {
            map.retain(|_, s| live(s, now));
            if map.len() >= MAX_SESSIONS {
                if let Some(oldest) = map
                    .iter()
                    .min_by_key(|(_, s)| s.created)
                    .map(|(k, _)| k.clone())
                {
                    map.remove(&oldest);
                }
            }
        }
        map.insert(id.clone(), s.clone());
        Some((id, s))
    }

    /// The live session `id`, marked as seen now; an expired one is dropped.
    pub fn get(&self, id: &str) -> Option<Session> {
        let now = Instant::now();
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get_mut(id)?;
        if !live(s, now) {
            map.remove(id);
            return None;
        }
        s.seen = now;
        Some(s.clone())
    }

    pub fn remove(&self, id: &str) {
        self.map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(id);
    }
}

/// Wrong passwords allowed per minute, all callers together.
pub const MAX_FAILURES_PER_MINUTE: usize = 5;

/// The wrong admin passwords of the last minute.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<std::collections::VecDeque<Instant>>,
}

impl Throttle {
    /// Whether a password may be tried now.
    pub fn open(&self) -> bool {
        let mut f = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while f
            .front()
            .is_some_and(|t| now.duration_since(*t) >= Duration::from_secs(60))
        {
            f.pop_front();
        }
        f.len() < MAX_FAILURES_PER_MINUTE
    }

    pub fn failed(&self) {
        self.failures
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push_back(Instant::now());
    }
}

fn live(s: &Session, now: Instant) -> bool {
    now.duration_since(s.seen) < IDLE && now.duration_since(s.created) < LIFETIME
}

#[cfg(test)]
mod tests {
    use super::*;
    use aqueduct_core::ApiScope;

    fn p() -> Principal {
        Principal {
            organization: "acme".into(),
            scope: ApiScope::Read,
            name: "api-key:1".into(),
        }
    }

    #[test]
    fn sessions_are_random_and_end_on_logout() {
        let s = Sessions::default();
        let (a, sa) = s.create(p(), Some("1".into())).unwrap();
        let (b, sb) = s.create(p(), Some("1".into())).unwrap();
        assert_ne!(a, b);
        assert_ne!(sa.csrf, sb.csrf);
        assert_eq!(a.len(), 43);
        assert!(s.get(&a).is_some());
        s.remove(&a);
        assert!(s.get(&a).is_none());
        assert!(s.get(&b).is_some());
        assert!(s.get("made-up").is_none());
    }

    #[test]
    fn an_idle_or_old_session_is_over() {
        let s = Sessions::default();
        let (id, _) = s.create(p(), Some("1".into())).unwrap();
        {
            let mut map = s.map.lock().unwrap();
            let e = map.get_mut(&id).unwrap();
            e.seen = Instant::now() - IDLE - Duration::from_secs(1);
        }
        assert!(s.get(&id).is_none(), "idle too long");
        let (id, _) = s.create(p(), Some("1".into())).unwrap();
        {
            let mut map = s.map.lock().unwrap();
            let e = map.get_mut(&id).unwrap();
            e.created = Instant::now() - LIFETIME - Duration::from_secs(1);
        }
        assert!(s.get(&id).is_none(), "past its lifetime");
    }

    #[test]
    fn wrong_passwords_close_the_door_for_a_minute() {
        let t = Throttle::default();
        for _ in 0..MAX_FAILURES_PER_MINUTE {
            assert!(t.open());
            t.failed();
        }
        assert!(!t.open());
        t.failures.lock().unwrap().iter_mut().for_each(|f| {
            *f = Instant::now().checked_sub(Duration::from_secs(61)).unwrap();
        });
        assert!(t.open(), "a minute later");
    }

    #[test]
    fn cookies_are_read_and_written_strictly() {
        let mut h = HeaderMap::new();
        h.insert(COOKIE, "a=1; aqueduct_session=xyz; b=2".parse().unwrap());
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        let c = set_cookie(SESSION_COOKIE, "v", IDLE, true);
        assert!(c.contains("HttpOnly") && c.contains("SameSite=Strict") && c.ends_with("Secure"));
        assert!(!set_cookie(SESSION_COOKIE, "v", IDLE, false).contains("Secure"));
    }
}
