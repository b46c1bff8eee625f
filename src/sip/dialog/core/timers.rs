//! The core's timer queue: one deadline per target (a transaction or a call), replaced when
//! the target is rescheduled and dropped when it is cancelled or its owner goes.
//!
//! A heap with lazy deletion (push on every reschedule, skip stale entries when they come
//! due) keeps every deadline ever set until it passes; a call's longest-life deadline
//! (`sip.max_call_secs`, 4 h) or session-refresh deadline then outlives the call by hours,
//! so memory grew with the call rate times those hours. Here the queue holds at most one
//! entry per live target.

use std::collections::{BTreeSet, HashMap};
use std::hash::Hash;
use std::time::Instant;

#[derive(Debug)]
pub(super) struct TimerQueue<T: Ord + Hash + Clone> {
    by_time: BTreeSet<(Instant, T)>,
    due: HashMap<T, Instant>,
}

impl<T: Ord + Hash + Clone> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            by_time: BTreeSet::new(),
            due: HashMap::new(),
        }
    }
}

impl<T: Ord + Hash + Clone> TimerQueue<T> {
    /// `target` wakes at `at` from now on (None: not at all), replacing what it had.
    pub(super) fn set(&mut self, target: T, at: Option<Instant>) {
        match at {
            Some(at) => {
                if let Some(old) = self.due.insert(target.clone(), at) {
                    if old == at {
                        return;
                    }
                    self.by_time.remove(&(old, target.clone()));
                }
                self.by_time.insert((at, target));
            }
            None => self.cancel(&target),
        }
    }

    /// `target` no longer wakes.
    pub(super) fn cancel(&mut self, target: &T) {
        if let Some(old) = self.due.remove(target) {
            self.by_time.remove(&(old, target.clone()));
        }
    }

    /// The earliest deadline.
    pub(super) fn next(&self) -> Option<Instant> {
        self.by_time.first().map(|(at, _)| *at)
    }

    /// The earliest target due at `now`, taken off the queue.
    pub(super) fn pop_due(&mut self, now: Instant) -> Option<T> {
        let (at, _) = self.by_time.first()?;
        if *at > now {
            return None;
        }
        let (_, target) = self.by_time.pop_first()?;
        self.due.remove(&target);
        Some(target)
    }

    pub(super) fn len(&self) -> usize {
        self.due.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_target_has_one_deadline_and_rescheduling_replaces_it() {
        let t0 = crate::test_clock::epoch();
        let s = Duration::from_secs;
        let mut q = TimerQueue::default();
        q.set("call-1", Some(t0 + s(4 * 3600)));
        q.set("call-1", Some(t0 + s(1800)));
        q.set("call-2", Some(t0 + s(5)));
        assert_eq!(q.len(), 2);
        assert_eq!(q.next(), Some(t0 + s(5)));
        assert_eq!(q.pop_due(t0 + s(4)), None);
        assert_eq!(q.pop_due(t0 + s(5)), Some("call-2"));
        // Moved later: the earlier deadline no longer fires.
        q.set("call-1", Some(t0 + s(7200)));
        assert_eq!(q.pop_due(t0 + s(1800)), None);
        assert_eq!(q.next(), Some(t0 + s(7200)));
        q.set("call-1", None);
        assert_eq!((q.len(), q.next()), (0, None));
    }

    #[test]
    fn ended_calls_leave_nothing_behind() {
        // 100,000 calls, each scheduled a few times up to a 4-hour deadline, then ended:
        // the queue is empty, where a lazy heap would hold 300,000 entries for 4 hours.
        let t0 = crate::test_clock::epoch();
        let mut q = TimerQueue::default();
        for call in 0..100_000u64 {
            let at = t0 + Duration::from_millis(call * 50);
            q.set(call, Some(at + Duration::from_millis(500)));
            q.set(call, Some(at + Duration::from_secs(1800)));
            q.set(call, Some(at + Duration::from_secs(4 * 3600)));
            q.cancel(&call);
        }
        assert_eq!(q.len(), 0);
        assert_eq!(q.next(), None);
    }
}
