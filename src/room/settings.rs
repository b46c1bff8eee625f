//! `dialplans/rooms.toml`: each room's PINs and behaviour, loaded (and reloaded) with the
//! dialplan; a bad file is rejected whole with file:line: reason. A room not listed takes
//! the defaults: no PINs of its own (the flow decides), nobody waits, nothing ends.
//!
//! ```toml
//! [room.demo]
//! pin = "1234"                 # participants
//! moderator_pin = "9999"       # moderators
//! wait_for_moderator = false   # participants hear music until a moderator joins
//! end_with_moderator = false   # the room ends when the last moderator leaves
//! max_members = 50             # below the gateway's room.max_members
//! record = "manual"            # or "always" (first member), "moderator" (first moderator)
//! keys = { "*" = "head_count", "#" = "none" }   # changes to the keypad map
//! ```

use crate::file_text::FileError;
use crate::file_text::line_of;
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// Every room's settings, shared by the flows (`room_role`) and the room registry; PINs set
/// through the admin API are written into it.
pub type RoomTable = std::sync::Arc<std::sync::RwLock<HashMap<String, RoomSettings>>>;

/// A table holding `rooms`.
pub fn table(rooms: HashMap<String, RoomSettings>) -> RoomTable {
    std::sync::Arc::new(std::sync::RwLock::new(rooms))
}

/// Checks a PIN given at run time (the admin API): 4 to 16 digits.
pub fn valid_pin(pin: &str) -> Result<(), String> {
    check_pin("pin", &Some(pin.to_string()))
}

/// When a room's recording starts by itself.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RecordPolicy {
    /// By keypad (moderator key 0) or the admin API only.
    #[default]
    Manual,
    /// When the first member joins.
    Always,
    /// When the first moderator joins (never before the moderator).
    Moderator,
}

/// One room's settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomSettings {
    /// The keypad map (the default map with the room's `keys` changes).
    pub keys: super::conference::Keymap,
    pub pin: Option<String>,
    pub moderator_pin: Option<String>,
    pub wait_for_moderator: bool,
    pub end_with_moderator: bool,
    pub max_members: Option<usize>,
    pub record: RecordPolicy,
}

impl RoomSettings {
    /// The role a PIN gives in this room: "moderator", "participant", or None.
    pub fn role_of(&self, pin: &str) -> Option<&'static str> {
        if self.moderator_pin.as_deref() == Some(pin) {
            Some("moderator")
        } else if self.pin.as_deref() == Some(pin) {
            Some("participant")
        } else {
            None
        }
    }
}

/// The role `pin` gives in `room` of `table`, if any.
pub fn role_in(table: &RoomTable, room: &str, pin: &str) -> Option<&'static str> {
    table.read().ok()?.get(room)?.role_of(pin)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomsToml {
    #[serde(default)]
    room: BTreeMap<String, toml::Spanned<RoomToml>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RoomToml {
    pin: Option<String>,
    moderator_pin: Option<String>,
    #[serde(default)]
    wait_for_moderator: bool,
    #[serde(default)]
    end_with_moderator: bool,
    max_members: Option<usize>,
    #[serde(default)]
    record: RecordPolicy,
    #[serde(default)]
    keys: BTreeMap<String, String>,
}

/// The shortest PIN a room takes: with the guess counting ([`super::pin_guard`]), 4 digits
/// hold a bot at 20 tries an hour for about 20 days on average; 3 would fall in two.
pub const MIN_PIN_DIGITS: usize = 4;

/// The PIN itself is never repeated in the message (it would end up in logs).
fn check_pin(what: &str, pin: &Option<String>) -> Result<(), String> {
    match pin {
        Some(p) if p.len() < MIN_PIN_DIGITS || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{what} must be {MIN_PIN_DIGITS} to 16 digits"))
        }
        _ => Ok(()),
    }
}

/// Parses a rooms file's text (named `file` in errors).
pub fn parse(file: &Path, text: &str) -> Result<HashMap<String, RoomSettings>, Vec<FileError>> {
    let at = |line: usize, reason: String| FileError {
        file: file.to_path_buf(),
        line,
        reason,
    };
    let parsed: RoomsToml = crate::file_text::parse_toml(file, text)?;
    let mut errors = Vec::new();
    let mut rooms = HashMap::new();
    for (name, spanned) in parsed.room {
        let line = line_of(text, spanned.span().start);
        let r = spanned.into_inner();
        let checked = check_pin("pin", &r.pin)
            .and_then(|_| check_pin("moderator_pin", &r.moderator_pin))
            .and_then(|_| match (&r.pin, &r.moderator_pin) {
                (Some(a), Some(b)) if a == b => Err("pin and moderator_pin must differ".to_string()),
                _ => Ok(()),
            })
            .and_then(|_| {
                if (r.wait_for_moderator || r.end_with_moderator) && r.moderator_pin.is_none() {
                    Err("wait_for_moderator and end_with_moderator need a moderator_pin".to_string())
                } else if r.max_members == Some(0) {
                    Err("max_members must be at least 1".to_string())
                } else if name == "events" {
                    Err("`events` is reserved (GET /api/v1/rooms/events)".to_string())
                } else {
                    Ok(())
                }
            });
        let keys = checked.and_then(|_| {
            super::conference::Keymap::with_overrides(r.keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))
        });
        match keys {
            Ok(keys) => {
                rooms.insert(
                    name,
                    RoomSettings {
                        keys,
                        pin: r.pin,
                        moderator_pin: r.moderator_pin,
                        wait_for_moderator: r.wait_for_moderator,
                        end_with_moderator: r.end_with_moderator,
                        max_members: r.max_members,
                        record: r.record,
                    },
                );
            }
            Err(reason) => errors.push(at(line, format!("room `{name}`: {reason}"))),
        }
    }
    if errors.is_empty() { Ok(rooms) } else { Err(errors) }
}

/// Loads `dir/rooms.toml`; a missing file is no settings.
pub fn load(dir: &Path) -> Result<HashMap<String, RoomSettings>, Vec<FileError>> {
    let file = dir.join("rooms.toml");
    match std::fs::read_to_string(&file) {
        Ok(text) => parse(&file, &text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
        Err(e) => Err(vec![FileError {
            file,
            line: 0,
            reason: format!("cannot read: {e}"),
        }]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rooms_file_parses_and_rejects_with_lines() {
        let ok = parse(
            Path::new("rooms.toml"),
            "[room.demo]\npin = \"1234\"\nmoderator_pin = \"9999\"\nwait_for_moderator = true\n",
        )
        .unwrap();
        let demo = &ok["demo"];
        assert_eq!(demo.role_of("9999"), Some("moderator"));
        assert_eq!(demo.role_of("1234"), Some("participant"));
        assert_eq!(demo.role_of("0000"), None);
        assert!(demo.wait_for_moderator);
        let bad = parse(
            Path::new("rooms.toml"),
            "[room.a]\npin = \"12a\"\n\n[room.b]\nwait_for_moderator = true\n\n[room.c]\npin = \"1111\"\nmoderator_pin = \"1111\"\n\n[room.d]\npin = \"123\"\n",
        )
        .unwrap_err();
        let lines: Vec<usize> = bad.iter().map(|e| e.line).collect();
        assert_eq!(lines, [1, 4, 7, 11], "{bad:?}");
        assert!(bad[0].reason.contains("digits"), "{bad:?}");
        assert!(
            bad[3].reason.contains("4 to 16 digits") && !bad[3].reason.contains("123"),
            "{bad:?}"
        );
        let unknown = parse(Path::new("rooms.toml"), "[room.a]\npn = \"1\"\n").unwrap_err();
        assert_eq!(unknown[0].line, 2, "{unknown:?}");
    }
}
