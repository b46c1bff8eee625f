//! Who may use the web console: one-time sign-in links (`tolk console url`) and the
//! sessions they open, each with its own CSRF token. Sans-IO: time and the random tokens
//! are passed in, so the rules are tested in virtual time.
//!
//! - A link is good for [`LINK_LIFETIME`] and once: redeeming it removes it, whether it
//!   was still good or not.
//! - A session lives while it is used ([`Limits::idle`]) and never longer than
//!   [`Limits::absolute`] after it was opened.
//! - Links and sessions are kept by the SHA-256 of their secret, never the secret itself,
//!   so what is held in memory cannot be replayed.
//! - Both tables are bounded: when full, the entry closest to expiry makes room.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::time::{Duration, Instant};

/// How long a sign-in link is good for (the issue's five minutes).
pub const LINK_LIFETIME: Duration = Duration::from_secs(300);
/// At most this many links waiting to be used.
pub const MAX_LINKS: usize = 64;
/// At most this many open sessions.
pub const MAX_SESSIONS: usize = 256;

/// How long sessions last.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Closed after this long without a request.
    pub idle: Duration,
    /// Closed this long after sign-in, used or not.
    pub absolute: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            idle: Duration::from_secs(8 * 3600),
            absolute: Duration::from_secs(24 * 3600),
        }
    }
}

struct Link {
    expires: Instant,
    next: String,
}

/// An open session.
#[derive(Debug, Clone)]
pub struct Session {
    /// Sent back with every change the console asks for (`X-CSRF-Token` or a form's
    /// `csrf` field).
    pub csrf: String,
    last_used: Instant,
    ends: Instant,
}

/// Why a link did not sign anyone in.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignInError {
    #[error("this sign-in link is unknown or was used already: run `tolk console url` for a new one")]
    Unknown,
    #[error("this sign-in link has expired (links last 5 minutes): run `tolk console url` for a new one")]
    Expired,
}

/// The links and sessions of one gateway.
pub struct Sessions {
    limits: Limits,
    links: HashMap<[u8; 32], Link>,
    sessions: HashMap<[u8; 32], Session>,
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// When `table` holds `max` entries, removes the one with the smallest `age` (the first to
/// expire, or the longest unused).
fn make_room<V>(table: &mut HashMap<[u8; 32], V>, max: usize, age: impl Fn(&V) -> Instant) {
    if table.len() >= max
        && let Some(first) = table.iter().min_by_key(|(_, v)| age(v)).map(|(k, _)| *k)
    {
        table.remove(&first);
    }
}

/// Where a link may send the browser: a console page, never another site (`//evil`,
/// `https://...`) nor a path outside `/console/`.
pub fn safe_next(next: &str) -> String {
    let next = next.trim();
    let page = next.trim_start_matches("/console").trim_start_matches('/');
    let ok = !next.starts_with("//")
        && page
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.'))
        && !page.contains("..")
        && !page.contains("//");
    if ok {
        format!("/console/{page}")
    } else {
        "/console/".into()
    }
}

impl Sessions {
    pub fn new(limits: Limits) -> Sessions {
        Sessions {
            limits,
            links: HashMap::new(),
            sessions: HashMap::new(),
        }
    }

    /// Registers a one-time link `token` (random, from the caller) that opens a session
    /// and sends the browser to `next` (a console page; see [`safe_next`]).
    pub fn issue_link(&mut self, now: Instant, token: &str, next: &str) {
        self.links.retain(|_, l| l.expires > now);
        make_room(&mut self.links, MAX_LINKS, |l| l.expires);
        self.links.insert(
            digest(token),
            Link {
                expires: now + LINK_LIFETIME,
                next: safe_next(next),
            },
        );
    }

    /// Uses up the link `token`: on success a session `session_id` (random, from the
    /// caller) with the CSRF token `csrf` is open, and the page to go to is returned.
    pub fn redeem(&mut self, now: Instant, token: &str, session_id: &str, csrf: &str) -> Result<String, SignInError> {
        let link = self.links.remove(&digest(token)).ok_or(SignInError::Unknown)?;
        if link.expires <= now {
            return Err(SignInError::Expired);
        }
        self.open(now, session_id, csrf);
        Ok(link.next)
    }

    /// Opens a session without a link (an admin token was shown).
    pub fn open(&mut self, now: Instant, session_id: &str, csrf: &str) {
        let idle = self.limits.idle;
        self.sessions.retain(|_, s| Self::alive(s, now, idle));
        make_room(&mut self.sessions, MAX_SESSIONS, |s| s.last_used);
        self.sessions.insert(
            digest(session_id),
            Session {
                csrf: csrf.to_string(),
                last_used: now,
                ends: now + self.limits.absolute,
            },
        );
    }

    fn alive(s: &Session, now: Instant, idle: Duration) -> bool {
        now < s.ends && now.saturating_duration_since(s.last_used) < idle
    }

    /// The session `session_id`, if it is open; using it keeps it open.
    pub fn check(&mut self, now: Instant, session_id: &str) -> Option<Session> {
        let key = digest(session_id);
        let idle = self.limits.idle;
        let s = self.sessions.get_mut(&key)?;
        if !Self::alive(s, now, idle) {
            self.sessions.remove(&key);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    /// Closes a session (sign out).
    pub fn close(&mut self, session_id: &str) {
        self.sessions.remove(&digest(session_id));
    }

    /// Open sessions and waiting links, for `/metrics`-style counts and tests.
    pub fn counts(&self) -> (usize, usize) {
        (self.sessions.len(), self.links.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> (Sessions, Instant) {
        (Sessions::new(Limits::default()), Instant::now())
    }

    #[test]
    fn a_link_signs_in_once_and_sends_to_its_page() {
        let (mut s, t0) = sessions();
        s.issue_link(t0, "link-1", "rooms");
        assert_eq!(
            s.redeem(t0 + Duration::from_secs(10), "link-1", "sess-1", "csrf-1"),
            Ok("/console/rooms".into())
        );
        assert_eq!(
            s.redeem(t0 + Duration::from_secs(11), "link-1", "sess-2", "csrf-2"),
            Err(SignInError::Unknown)
        );
        let open = s.check(t0 + Duration::from_secs(12), "sess-1").expect("session open");
        assert_eq!(open.csrf, "csrf-1");
        assert!(s.check(t0, "sess-2").is_none());
    }

    #[test]
    fn a_link_expires_after_five_minutes_and_is_gone_once_tried() {
        let (mut s, t0) = sessions();
        s.issue_link(t0, "link", "");
        assert_eq!(
            s.redeem(t0 + LINK_LIFETIME, "link", "sess", "csrf"),
            Err(SignInError::Expired)
        );
        assert_eq!(s.redeem(t0, "link", "sess", "csrf"), Err(SignInError::Unknown));
        assert!(s.check(t0, "sess").is_none());
    }

    #[test]
    fn sessions_close_when_idle_and_at_their_absolute_end() {
        let limits = Limits {
            idle: Duration::from_secs(60),
            absolute: Duration::from_secs(150),
        };
        let mut s = Sessions::new(limits);
        let t0 = Instant::now();
        s.open(t0, "a", "x");
        s.open(t0, "b", "y");
        // `a` is used every 50 s: open until the absolute end; `b` idles out.
        for k in 1..=2 {
            assert!(s.check(t0 + Duration::from_secs(50 * k), "a").is_some());
        }
        assert!(s.check(t0 + Duration::from_secs(100), "b").is_none());
        assert!(s.check(t0 + Duration::from_secs(150), "a").is_none());
        s.open(t0, "c", "z");
        s.close("c");
        assert!(s.check(t0, "c").is_none());
    }

    #[test]
    fn next_pages_stay_inside_the_console() {
        assert_eq!(safe_next("rooms"), "/console/rooms");
        assert_eq!(safe_next("/console/records"), "/console/records");
        assert_eq!(safe_next(""), "/console/");
        for bad in [
            "//evil.example",
            "https://evil.example/",
            "../api/v1/cdrs",
            "rooms?x=1",
            "a b",
        ] {
            assert_eq!(safe_next(bad), "/console/", "{bad}");
        }
    }

    #[test]
    fn the_tables_are_bounded() {
        let (mut s, t0) = sessions();
        for i in 0..(MAX_LINKS + 10) {
            s.issue_link(t0 + Duration::from_millis(i as u64), &format!("l{i}"), "");
        }
        for i in 0..(MAX_SESSIONS + 10) {
            s.open(t0 + Duration::from_millis(i as u64), &format!("s{i}"), "c");
        }
        assert_eq!(s.counts(), (MAX_SESSIONS, MAX_LINKS));
        // The newest survive.
        assert!(s.redeem(t0, &format!("l{}", MAX_LINKS + 9), "new", "c").is_ok());
    }
}
