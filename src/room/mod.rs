//! Rooms. Today: the registry of conference rooms and their members (who is in which room,
//! with which role), which flows join and the admin API lists. The mixer that makes members
//! hear each other is the conference issue's work; until then a member hears silence.
//!
//! Owns: membership, and the pure [`mixer`]. Must not: touch media or signalling.

pub mod mixer;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// A member as admins see them: never the number in clear.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Member {
    /// The call (gateway-local id).
    pub call: u64,
    /// `+1555010****` or `anonymous`.
    pub caller: String,
    pub role: String,
    pub muted: bool,
    /// Unix microseconds.
    pub joined_at: i64,
}

/// One room with the session that runs while it has members.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Room {
    pub name: String,
    /// A new session starts when the first member joins an empty room.
    pub session: uuid::Uuid,
    pub members: Vec<Member>,
}

/// Every room with members, shared by the call path and the admin API.
#[derive(Clone, Default)]
pub struct Rooms(Arc<Mutex<BTreeMap<String, Room>>>);

impl Rooms {
    /// Adds a member; returns the room session and how many members the room now has.
    pub fn join(&self, room: &str, member: Member) -> (uuid::Uuid, usize) {
        let mut rooms = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let r = rooms.entry(room.to_string()).or_insert_with(|| Room {
            name: room.to_string(),
            session: uuid::Uuid::now_v7(),
            members: Vec::new(),
        });
        r.members.retain(|m| m.call != member.call);
        r.members.push(member);
        (r.session, r.members.len())
    }

    /// Removes a call from whatever room it is in; an empty room ends its session.
    pub fn leave(&self, call: u64) -> Option<String> {
        let mut rooms = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let name = rooms
            .iter()
            .find(|(_, r)| r.members.iter().any(|m| m.call == call))
            .map(|(n, _)| n.clone())?;
        if let Some(r) = rooms.get_mut(&name) {
            r.members.retain(|m| m.call != call);
            if r.members.is_empty() {
                rooms.remove(&name);
            }
        }
        Some(name)
    }

    /// A snapshot of every room with members, by name.
    pub fn list(&self) -> Vec<Room> {
        self.0
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(call: u64) -> Member {
        Member {
            call,
            caller: "+1555010****".into(),
            role: "participant".into(),
            muted: false,
            joined_at: 0,
        }
    }

    #[test]
    fn sessions_start_with_the_first_member_and_end_with_the_last() {
        let rooms = Rooms::default();
        let (s1, n) = rooms.join("demo", m(1));
        assert_eq!(n, 1);
        let (s2, n) = rooms.join("demo", m(2));
        assert_eq!((s1, n), (s2, 2));
        assert_eq!(rooms.leave(1).as_deref(), Some("demo"));
        assert_eq!(rooms.list()[0].members.len(), 1);
        rooms.leave(2);
        assert!(rooms.list().is_empty());
        let (s3, _) = rooms.join("demo", m(3));
        assert_ne!(s1, s3);
        assert_eq!(rooms.leave(99), None);
    }
}
