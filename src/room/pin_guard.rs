//! PIN guessing, counted across calls: a caller who enters wrong PINs too often is locked out
//! for a while (whatever room, whichever call), and a room that sees too many wrong PINs from
//! everyone together stops taking PINs for a while and raises an alarm (a distributed
//! guess). Pure: time comes in as `now`; memory is bounded.
//!
//! Without it a 4-digit PIN falls to a bot in minutes: 10,000 PINs at 3 tries a call is
//! about 3,300 calls. With the defaults (5 wrong in 15 minutes locks for 15 minutes, per
//! caller; 50 per room) a single caller gets 20 tries an hour.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

/// The limits (`[room]` `pin_*` settings).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinLimits {
    /// Wrong PINs within `window` that lock a caller out.
    pub caller_failures: u32,
    /// Wrong PINs within `window` (all callers together) that lock a room's PIN entry;
    /// 0: never.
    pub room_failures: u32,
    pub window: Duration,
    pub lock: Duration,
}

impl Default for PinLimits {
    fn default() -> Self {
        PinLimits {
            caller_failures: 5,
            room_failures: 50,
            window: Duration::from_secs(15 * 60),
            lock: Duration::from_secs(15 * 60),
        }
    }
}

/// Most callers and rooms tracked at once; past it, the quietest entries are forgotten.
pub const MAX_TRACKED: usize = 100_000;

/// Who is locked out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lockout {
    Caller,
    Room,
}

impl Lockout {
    pub fn as_str(self) -> &'static str {
        match self {
            Lockout::Caller => "caller",
            Lockout::Room => "room",
        }
    }
}

#[derive(Debug, Default)]
struct Tally {
    failures: VecDeque<Instant>,
    locked_until: Option<Instant>,
}

impl Tally {
    fn locked(&self, now: Instant) -> bool {
        self.locked_until.is_some_and(|t| now < t)
    }

    /// Counts a failure; true when it locks.
    fn fail(&mut self, now: Instant, limit: u32, limits: &PinLimits) -> bool {
        while self
            .failures
            .front()
            .is_some_and(|t| now.saturating_duration_since(*t) > limits.window)
        {
            self.failures.pop_front();
        }
        self.failures.push_back(now);
        if limit > 0 && self.failures.len() >= limit as usize && !self.locked(now) {
            self.locked_until = Some(now + limits.lock);
            self.failures.clear();
            return true;
        }
        false
    }

    fn idle(&self, now: Instant, limits: &PinLimits) -> bool {
        !self.locked(now)
            && self
                .failures
                .back()
                .is_none_or(|t| now.saturating_duration_since(*t) > limits.window)
    }
}

/// Wrong PINs per caller and per room.
#[derive(Debug, Default)]
pub struct PinGuard {
    limits: PinLimits,
    callers: HashMap<String, Tally>,
    rooms: HashMap<String, Tally>,
}

impl PinGuard {
    pub fn new(limits: PinLimits) -> PinGuard {
        PinGuard {
            limits,
            ..PinGuard::default()
        }
    }

    pub fn limits(&self) -> PinLimits {
        self.limits
    }

    /// Whether `caller` may try a PIN for `room` now.
    pub fn locked(&self, now: Instant, caller: &str, room: &str) -> Option<Lockout> {
        if self.callers.get(caller).is_some_and(|t| t.locked(now)) {
            return Some(Lockout::Caller);
        }
        if self.rooms.get(room).is_some_and(|t| t.locked(now)) {
            return Some(Lockout::Room);
        }
        None
    }

    /// A wrong PIN: the lockouts it starts (none, the caller's, the room's, or both).
    pub fn failed(&mut self, now: Instant, caller: &str, room: &str) -> Vec<Lockout> {
        let limits = self.limits;
        let mut started = Vec::new();
        Self::bound(&mut self.callers, now, &limits);
        Self::bound(&mut self.rooms, now, &limits);
        if self
            .callers
            .entry(caller.to_string())
            .or_default()
            .fail(now, limits.caller_failures, &limits)
        {
            started.push(Lockout::Caller);
        }
        if self
            .rooms
            .entry(room.to_string())
            .or_default()
            .fail(now, limits.room_failures, &limits)
        {
            started.push(Lockout::Room);
        }
        started
    }

    /// A right PIN: the caller's count starts again (the room's stays: a distributed guess
    /// is still going on).
    pub fn succeeded(&mut self, caller: &str) {
        if let Some(t) = self.callers.get_mut(caller)
            && t.locked_until.is_none()
        {
            t.failures.clear();
        }
    }

    /// Keeps a map under [`MAX_TRACKED`]: idle entries go first, then the oldest tenth of
    /// the rest (locked ones stay), so the cost is paid once per many new entries.
    fn bound(map: &mut HashMap<String, Tally>, now: Instant, limits: &PinLimits) {
        if map.len() < MAX_TRACKED {
            return;
        }
        map.retain(|_, t| !t.idle(now, limits));
        if map.len() < MAX_TRACKED * 9 / 10 {
            return;
        }
        let mut by_age: Vec<(Option<Instant>, String)> = map
            .iter()
            .filter(|(_, t)| !t.locked(now))
            .map(|(k, t)| (t.failures.back().copied(), k.clone()))
            .collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(MAX_TRACKED / 10) {
            map.remove(&k);
        }
    }

    /// Entries tracked (for tests and a gauge).
    pub fn tracked(&self) -> usize {
        self.callers.len() + self.rooms.len()
    }
}

impl From<&crate::config::RoomConfig> for PinLimits {
    fn from(c: &crate::config::RoomConfig) -> Self {
        PinLimits {
            caller_failures: c.pin_caller_failures,
            room_failures: c.pin_room_failures,
            window: Duration::from_secs(c.pin_window_secs),
            lock: Duration::from_secs(c.pin_lock_secs),
        }
    }
}

/// What a PIN entry gives a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinCheck {
    Role(&'static str),
    Wrong,
    /// No PIN is looked at: the caller, or the room, is locked out for now.
    Locked(Lockout),
}

/// Who is entering a PIN: `key` is what the counting goes by (the caller's pseudonym, or a
/// stand-in, never logged); `shown` is how logs name them (masked).
#[derive(Debug, Clone, Copy)]
pub struct PinCaller<'a> {
    pub key: &'a str,
    pub shown: &'a str,
    pub call: u64,
}

impl super::Rooms {
    /// Sets the limits (from `[room]`); counts so far are forgotten.
    pub fn set_pin_limits(&self, limits: PinLimits) {
        *self.guard.lock().unwrap_or_else(|p| p.into_inner()) = PinGuard::new(limits);
    }

    /// The role `pin` gives `caller` in `room`, with wrong PINs counted across calls: a
    /// locked-out caller or room gets [`PinCheck::Locked`] whatever the PIN. Each lockout
    /// is a security event (`tolk::security`), a room's also an alarm on the room events.
    pub fn check_pin(&self, now: Instant, room: &str, pin: &str, caller: PinCaller<'_>) -> PinCheck {
        let mut guard = self.guard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(lockout) = guard.locked(now, caller.key, room) {
            metrics::counter!("pin_attempts_total", "outcome" => "locked_out").increment(1);
            return PinCheck::Locked(lockout);
        }
        if let Some(role) = self.role_of(room, pin) {
            guard.succeeded(caller.key);
            metrics::counter!("pin_attempts_total", "outcome" => "right").increment(1);
            return PinCheck::Role(role);
        }
        metrics::counter!("pin_attempts_total", "outcome" => "wrong").increment(1);
        let lock_secs = guard.limits().lock.as_secs();
        for lockout in guard.failed(now, caller.key, room) {
            metrics::counter!("pin_lockouts_total", "scope" => lockout.as_str()).increment(1);
            tracing::warn!(
                target: "tolk::security",
                reason = "pin_lockout",
                scope = lockout.as_str(),
                room,
                call = caller.call,
                caller = caller.shown,
                lock_secs,
                "too many wrong PINs: locked out"
            );
            if lockout == Lockout::Room {
                self.emit(room, None, super::RoomEventKind::PinGuessing);
            }
        }
        PinCheck::Wrong
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn five_wrong_pins_in_the_window_lock_the_caller_for_the_lock_time() {
        let mut g = PinGuard::new(PinLimits::default());
        let t0 = Instant::now();
        for i in 0..4 {
            assert!(g.failed(t0 + Duration::from_secs(i * 60), "p1", "demo").is_empty());
        }
        assert_eq!(g.locked(t0, "p1", "demo"), None);
        assert_eq!(
            g.failed(t0 + Duration::from_secs(300), "p1", "demo"),
            vec![Lockout::Caller]
        );
        // Locked everywhere, for any room, for 15 minutes.
        let t = t0 + Duration::from_secs(301);
        assert_eq!(g.locked(t, "p1", "demo"), Some(Lockout::Caller));
        assert_eq!(g.locked(t, "p1", "other"), Some(Lockout::Caller));
        assert_eq!(g.locked(t, "p2", "demo"), None);
        assert_eq!(
            g.locked(t0 + Duration::from_secs(300 + 899), "p1", "demo"),
            Some(Lockout::Caller)
        );
        assert_eq!(g.locked(t0 + Duration::from_secs(300 + 900), "p1", "demo"), None);
    }

    #[test]
    fn failures_older_than_the_window_do_not_count_and_success_resets() {
        let mut g = PinGuard::new(PinLimits::default());
        let t0 = Instant::now();
        for i in 0..4 {
            g.failed(t0 + Duration::from_secs(i), "p1", "demo");
        }
        // Sixteen minutes later the four are forgotten.
        let later = t0 + Duration::from_secs(16 * 60);
        assert!(g.failed(later, "p1", "demo").is_empty());
        for i in 1..4 {
            assert!(g.failed(later + Duration::from_secs(i), "p1", "demo").is_empty());
        }
        g.succeeded("p1");
        assert!(g.failed(later + Duration::from_secs(10), "p1", "demo").is_empty());
    }

    #[test]
    fn many_callers_guessing_one_room_lock_its_pin_entry() {
        let limits = PinLimits {
            room_failures: 10,
            ..PinLimits::default()
        };
        let mut g = PinGuard::new(limits);
        let t0 = Instant::now();
        for i in 0..9 {
            assert!(g.failed(t0, &format!("bot{i}"), "demo").is_empty());
        }
        assert_eq!(g.failed(t0, "bot9", "demo"), vec![Lockout::Room]);
        assert_eq!(g.locked(t0, "someone", "demo"), Some(Lockout::Room));
        assert_eq!(g.locked(t0, "someone", "other"), None);
    }

    #[test]
    fn memory_stays_bounded_under_a_flood_of_callers() {
        let mut g = PinGuard::new(PinLimits::default());
        let t0 = Instant::now();
        for i in 0..(MAX_TRACKED + 500) {
            g.failed(t0 + Duration::from_millis(i as u64), &format!("c{i}"), "demo");
        }
        assert!(g.tracked() <= MAX_TRACKED + 1, "{}", g.tracked());
    }
}
