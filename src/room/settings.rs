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
//!
//! An interpretation room ([`super::interpretation`]) names its floor language and its
//! channels; each role has its own PIN (all different), each booth its interpreters' PIN:
//!
//! ```toml
//! [room.summit]
//! floor = "English"
//! floor_prompt = "interp-menu-floor-en"   # the menu's first entry (the floor is 0)
//! bleed_db = -18               # the floor under a channel; 0 = none
//! speaker_pin = "1111"
//! listener_pin = "4444"
//! moderator_pin = "8888"
//! channels = [
//!   { number = 1, language = "Spanish", interpreter_pin = "2222", prompt = "interp-menu-es",
//!     announce = "interp-es" },
//!   { number = 2, language = "French", interpreter_pin = "3333", retour = 1 },
//! ]
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
    /// Set for an interpretation room.
    pub interpretation: Option<InterpretationSettings>,
}

/// An interpretation room's layout and role PINs (the moderator's is `moderator_pin`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InterpretationSettings {
    pub layout: super::interpretation::Layout,
    pub speaker_pin: Option<String>,
    pub listener_pin: Option<String>,
    /// Each booth's interpreters' PIN, by channel number.
    pub interpreter_pins: Vec<(u8, String)>,
}

impl InterpretationSettings {
    /// The role (and booth) the entered PIN gives; `entered` says whether a stored PIN
    /// (clear, or a keyed digest) is the one entered.
    pub fn role_of(
        &self,
        entered: &dyn Fn(&str) -> bool,
        moderator_pin: Option<&str>,
    ) -> Option<super::interpretation::Role> {
        use super::interpretation::Role;
        if moderator_pin.is_some_and(entered) {
            Some(Role::Moderator)
        } else if self.speaker_pin.as_deref().is_some_and(entered) {
            Some(Role::Speaker)
        } else if self.listener_pin.as_deref().is_some_and(entered) {
            Some(Role::Listener)
        } else {
            self.interpreter_pins
                .iter()
                .find(|(_, p)| entered(p))
                .map(|&(booth, _)| Role::Interpreter { booth })
        }
    }
}

impl RoomSettings {
    /// The role a PIN gives in this room: "moderator", "participant", or None; in an
    /// interpretation room "speaker", "interpreter", "listener" or "moderator".
    /// PINs compared as stored (clear).
    pub fn role_of(&self, pin: &str) -> Option<&'static str> {
        self.role_of_entered(&|stored| stored == pin)
    }

    /// The role of the entered PIN; `entered` says whether a stored PIN (clear, or a keyed
    /// digest: [`PinKey::matches`](super::pins::PinKey::matches)) is the one entered.
    pub fn role_of_entered(&self, entered: &dyn Fn(&str) -> bool) -> Option<&'static str> {
        if let Some(i) = &self.interpretation {
            return i.role_of(entered, self.moderator_pin.as_deref()).map(|r| r.name());
        }
        if self.moderator_pin.as_deref().is_some_and(entered) {
            Some("moderator")
        } else if self.pin.as_deref().is_some_and(entered) {
            Some("participant")
        } else {
            None
        }
    }
}

/// The role `pin` gives in `room` of `table`, if any, PINs kept as digests tried under `key`.
pub fn role_in(table: &RoomTable, room: &str, pin: &str, key: &super::pins::PinKey) -> Option<&'static str> {
    table
        .read()
        .ok()?
        .get(room)?
        .role_of_entered(&|stored| key.matches(stored, pin))
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
    /// An interpretation room's floor language (its presence makes one).
    floor: Option<String>,
    floor_prompt: Option<String>,
    bleed_db: Option<i8>,
    speaker_pin: Option<String>,
    listener_pin: Option<String>,
    #[serde(default)]
    channels: Vec<ChannelToml>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChannelToml {
    number: u8,
    language: String,
    interpreter_pin: Option<String>,
    prompt: Option<String>,
    announce: Option<String>,
    retour: Option<u8>,
}

/// An interpretation room's part of a `[room.NAME]` table, checked.
fn interpretation_of(r: &RoomToml) -> Result<Option<InterpretationSettings>, String> {
    use super::interpretation::{Channel, Layout, layout::DEFAULT_BLEED_DB};
    let Some(floor) = &r.floor else {
        if r.bleed_db.is_some()
            || r.floor_prompt.is_some()
            || r.speaker_pin.is_some()
            || r.listener_pin.is_some()
            || !r.channels.is_empty()
        {
            return Err(
                "bleed_db, speaker_pin, listener_pin and channels need `floor` (an interpretation room)".into(),
            );
        }
        return Ok(None);
    };
    if r.pin.is_some() {
        return Err("an interpretation room has speaker_pin and listener_pin, not pin".into());
    }
    if r.wait_for_moderator || r.end_with_moderator {
        return Err("wait_for_moderator and end_with_moderator are for conference rooms".into());
    }
    check_pin("speaker_pin", &r.speaker_pin)?;
    check_pin("listener_pin", &r.listener_pin)?;
    let mut pins: Vec<&str> = [&r.moderator_pin, &r.speaker_pin, &r.listener_pin]
        .into_iter()
        .flatten()
        .map(String::as_str)
        .collect();
    let mut interpreter_pins = Vec::new();
    for c in &r.channels {
        check_pin(&format!("channel {} interpreter_pin", c.number), &c.interpreter_pin)?;
        if let Some(p) = &c.interpreter_pin {
            pins.push(p);
            interpreter_pins.push((c.number, p.clone()));
        }
    }
    let mut sorted = pins.clone();
    sorted.sort_unstable();
    sorted.dedup();
    if sorted.len() != pins.len() {
        return Err("every role's PIN (and every booth's) must differ".into());
    }
    let layout = Layout {
        floor_language: floor.clone(),
        floor_prompt: r.floor_prompt.clone(),
        channels: r
            .channels
            .iter()
            .map(|c| Channel {
                number: c.number,
                language: c.language.clone(),
                prompt: c.prompt.clone(),
                announce: c.announce.clone(),
                retour: c.retour,
            })
            .collect(),
        bleed_db: r.bleed_db.unwrap_or(DEFAULT_BLEED_DB),
    };
    layout.validate()?;
    Ok(Some(InterpretationSettings {
        layout,
        speaker_pin: r.speaker_pin.clone(),
        listener_pin: r.listener_pin.clone(),
        interpreter_pins,
    }))
}

/// The shortest PIN a room takes: with the guess counting ([`super::pin_guard`]), 4 digits
/// hold a bot at 20 tries an hour for about 20 days on average; 3 would fall in two.
pub const MIN_PIN_DIGITS: usize = 4;

/// The PIN itself is never repeated in the message (it would end up in logs).
fn check_pin(what: &str, pin: &Option<String>) -> Result<(), String> {
    match pin {
        // A PIN kept as its keyed digest (`data_dir/rooms/*.json`, or written so in rooms.toml).
        Some(p) if super::pins::is_digest(p) => Ok(()),
        Some(p) if p.len() < MIN_PIN_DIGITS || p.len() > 16 || !p.bytes().all(|b| b.is_ascii_digit()) => {
            Err(format!("{what} must be {MIN_PIN_DIGITS} to 16 digits"))
        }
        _ => Ok(()),
    }
}

/// One room's table, checked (rooms.toml's `[room.NAME]`, or the admin API's JSON).
fn check_room(name: &str, r: RoomToml) -> Result<RoomSettings, String> {
    check_pin("pin", &r.pin)
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
        })?;
    let keys = super::conference::Keymap::with_overrides(r.keys.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    let interpretation = interpretation_of(&r)?;
    Ok(RoomSettings {
        keys,
        pin: r.pin,
        moderator_pin: r.moderator_pin,
        wait_for_moderator: r.wait_for_moderator,
        end_with_moderator: r.end_with_moderator,
        max_members: r.max_members,
        record: r.record,
        interpretation,
    })
}

/// A room defined through the admin API (`PUT /api/v1/rooms/{room}/settings`): the keys of
/// a rooms.toml `[room.NAME]` table as a JSON object, checked the same way. The message
/// never quotes a PIN.
pub fn parse_room_json(name: &str, json: &serde_json::Value) -> Result<RoomSettings, String> {
    let r: RoomToml = serde_json::from_value(json.clone()).map_err(|e| {
        // serde's message can quote the value (a PIN): the unknown or mistyped key only.
        let text = e.to_string();
        match text
            .strip_prefix("unknown field `")
            .and_then(|rest| rest.split_once('`'))
        {
            Some((key, _)) => format!("unknown key `{key}`"),
            None => {
                "the body must be a rooms.toml room table as a JSON object (docs/conference.md, docs/interpretation.md)"
                    .to_string()
            }
        }
    })?;
    check_room(name, r)
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
        match check_room(&name, r) {
            Ok(settings) => {
                rooms.insert(name, settings);
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

    #[test]
    fn interpretation_rooms_parse_with_a_pin_per_role_and_booth() {
        use crate::room::interpretation::Role;
        let text = r#"
[room.summit]
floor = "English"
speaker_pin = "1111"
listener_pin = "4444"
moderator_pin = "8888"
channels = [
  { number = 1, language = "Spanish", interpreter_pin = "2222" },
  { number = 2, language = "French", interpreter_pin = "3333", retour = 1 },
]
"#;
        let rooms = parse(Path::new("rooms.toml"), text).unwrap();
        let summit = &rooms["summit"];
        let i = summit.interpretation.as_ref().unwrap();
        assert_eq!(i.layout.bleed_db, -18);
        assert_eq!(i.layout.channel(2).and_then(|c| c.retour), Some(1));
        let role = |pin: &str| i.role_of(&|stored: &str| stored == pin, summit.moderator_pin.as_deref());
        assert_eq!(role("1111"), Some(Role::Speaker));
        assert_eq!(role("2222"), Some(Role::Interpreter { booth: 1 }));
        assert_eq!(role("3333"), Some(Role::Interpreter { booth: 2 }));
        assert_eq!(role("4444"), Some(Role::Listener));
        assert_eq!(role("8888"), Some(Role::Moderator));
        assert_eq!(role("9999"), None);
        assert_eq!(summit.role_of("2222"), Some("interpreter"));
        for (bad, why) in [
            (text.replace("\"3333\"", "\"2222\""), "must differ"),
            (text.replace("retour = 1", "retour = 7"), "retour 7"),
            (text.replace("floor = \"English\"\n", ""), "need `floor`"),
            (text.replace("number = 2", "number = 1"), "listed twice"),
            (text.replace("\"4444\"", "\"44\""), "listener_pin must be"),
        ] {
            let errors = parse(Path::new("rooms.toml"), &bad).unwrap_err();
            assert_eq!(errors[0].line, 2, "{errors:?}");
            assert!(errors[0].reason.contains(why), "{why}: {errors:?}");
        }
    }
}
