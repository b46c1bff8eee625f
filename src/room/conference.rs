//! Conference semantics on top of the registry: the keypad map members use during the call
//! and what each key does. Pure over [`Rooms`]: the call path carries out the
//! [`Effect`]s (prompts to play, a member to take out of the room).
//!
//! The default map (`docs/conference.md`):
//!
//! | key | everyone | | key | moderators |
//! |---|---|---|---|---|
//! | 1 | mute / unmute yourself | | 3 | lock / unlock the room |
//! | 2 | how many are in the room | | 5 | mute / unmute every participant |
//! | 4 / 6 | listen volume down / up | | 8 | eject the member who joined last |
//! | 7 / 9 | talk volume down / up | | 0 | start / stop recording the room |
//! | # | leave the room | | | |

use super::{Member, Rooms};
use crate::media::tone::ToneGenerator;
use crate::media_files::prompts::PromptCatalog;
use std::sync::Arc;

/// What a key does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyAction {
    ToggleMute,
    HeadCount,
    ListenDown,
    ListenUp,
    TalkDown,
    TalkUp,
    Leave,
    ToggleLock,
    ToggleMuteAll,
    EjectLast,
    ToggleRecording,
}

/// The keypad map of a room.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Keymap {
    keys: Vec<(char, KeyAction, bool)>,
}

impl Default for Keymap {
    fn default() -> Self {
        use KeyAction::*;
        Keymap {
            keys: vec![
                ('1', ToggleMute, false),
                ('2', HeadCount, false),
                ('4', ListenDown, false),
                ('6', ListenUp, false),
                ('7', TalkDown, false),
                ('9', TalkUp, false),
                ('#', Leave, false),
                ('3', ToggleLock, true),
                ('5', ToggleMuteAll, true),
                ('8', EjectLast, true),
                ('0', ToggleRecording, true),
            ],
        }
    }
}

/// Action names in `rooms.toml` (`keys = { "*" = "head_count" }`), and whether only
/// moderators may use them.
const ACTIONS: &[(&str, KeyAction, bool)] = &[
    ("mute", KeyAction::ToggleMute, false),
    ("head_count", KeyAction::HeadCount, false),
    ("listen_down", KeyAction::ListenDown, false),
    ("listen_up", KeyAction::ListenUp, false),
    ("talk_down", KeyAction::TalkDown, false),
    ("talk_up", KeyAction::TalkUp, false),
    ("leave", KeyAction::Leave, false),
    ("lock", KeyAction::ToggleLock, true),
    ("mute_all", KeyAction::ToggleMuteAll, true),
    ("eject_last", KeyAction::EjectLast, true),
    ("record", KeyAction::ToggleRecording, true),
];

impl Keymap {
    /// The default map with some keys changed: each entry maps a key (0-9, *, #) to an
    /// action name, or to "none" to disable it.
    pub fn with_overrides<'a>(keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Keymap, String> {
        let mut map = Keymap::default();
        for (key, action) in keys {
            let mut chars = key.chars();
            let (Some(digit), None) = (chars.next(), chars.next()) else {
                return Err(format!("key `{key}` must be one of 0-9, * or #"));
            };
            if !digit.is_ascii_digit() && digit != '*' && digit != '#' {
                return Err(format!("key `{key}` must be one of 0-9, * or #"));
            }
            map.keys.retain(|(d, _, _)| *d != digit);
            if action == "none" {
                continue;
            }
            let Some((_, a, moderator)) = ACTIONS.iter().find(|(n, _, _)| *n == action) else {
                let names: Vec<&str> = ACTIONS.iter().map(|(n, _, _)| *n).collect();
                return Err(format!(
                    "key `{key}`: unknown action `{action}` (one of {}, or none)",
                    names.join(", ")
                ));
            };
            // One key per action: the default key of a re-mapped action is freed.
            map.keys.retain(|(_, x, _)| x != a);
            map.keys.push((digit, *a, *moderator));
        }
        Ok(map)
    }

    /// The action of `digit` for a member (moderator keys do nothing for participants).
    pub fn action(&self, digit: char, moderator: bool) -> Option<KeyAction> {
        self.keys
            .iter()
            .find(|(d, _, m)| *d == digit && (moderator || !m))
            .map(|(_, a, _)| *a)
    }
}

/// What the call path must do after a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Play these prompts, one after the other, to the member who pressed the key.
    Play(Vec<String>),
    /// The member leaves the room (the flow's `join_conference` returns `reason`).
    Leave(&'static str),
    /// Another member is taken out of the room.
    Eject(u64),
}

/// Volume steps: 3 dB, within ±12 dB.
const STEP_DB: i8 = 3;
const MAX_DB: i8 = 12;

/// The prompts that say how many members a room has ("3" ... "participants are in this
/// conference"; or that the caller is alone).
pub fn head_count(members: usize) -> Vec<String> {
    if members <= 1 {
        return vec!["conf-alone".into()];
    }
    let mut prompts: Vec<String> = members.to_string().chars().map(|d| format!("digit-{d}")).collect();
    prompts.push("conf-participants".into());
    prompts
}

/// The audio of prompts and named tones (or tone specifications) one after the other, at
/// `rate`; None when nothing could be made.
pub fn render(prompts: Option<&PromptCatalog>, names: &[String], rate: u32) -> Option<Arc<[i16]>> {
    let mut pcm = Vec::new();
    for name in names.iter().filter(|n| !n.is_empty()) {
        if let Some(p) = prompts.and_then(|p| p.pcm(name, rate).ok()) {
            pcm.extend_from_slice(&p);
        } else if let Ok(mut tone) = ToneGenerator::new(name, rate, -12.0, false) {
            let frame = rate as usize / 50;
            while tone.next_frame(frame, &mut pcm) {}
        }
    }
    (!pcm.is_empty()).then(|| Arc::from(pcm))
}

/// Carries out `digit` pressed by `call` in its room (the room's keypad map from rooms.toml;
/// an interpretation room's map is [`super::interpretation::keys`]).
pub fn on_key(rooms: &Rooms, call: u64, digit: char) -> Vec<Effect> {
    let Some((room, me)) = rooms.member(call) else {
        return Vec::new();
    };
    if let Some(effects) = rooms.interpretation_key(&room, call, digit) {
        return effects;
    }
    let keymap = rooms.settings(&room).keys;
    let Some(action) = keymap.action(digit, me.is_moderator()) else {
        return Vec::new();
    };
    act(rooms, call, &room, action)
}

/// Carries out one keypad action of `call` in `room`.
pub fn act(rooms: &Rooms, call: u64, room: &str, action: KeyAction) -> Vec<Effect> {
    let room = room.to_string();
    let step = |v: i8, by: i8| (v + by).clamp(-MAX_DB, MAX_DB);
    let play = |names: &[&str]| vec![Effect::Play(names.iter().map(|s| s.to_string()).collect())];
    match action {
        KeyAction::ToggleMute => match rooms.update(call, |m: &mut Member| m.muted = !m.muted) {
            Ok(m) if m.muted => play(&["conf-muted"]),
            Ok(_) => play(&["conf-unmuted"]),
            Err(_) => Vec::new(),
        },
        KeyAction::HeadCount => {
            let n = rooms.get(&room).map(|r| r.members.len()).unwrap_or(0);
            vec![Effect::Play(head_count(n))]
        }
        KeyAction::ListenDown | KeyAction::ListenUp => {
            let by = if action == KeyAction::ListenUp {
                STEP_DB
            } else {
                -STEP_DB
            };
            let _ = rooms.update(call, |m| m.listen_db = step(m.listen_db, by));
            play(&["beep"])
        }
        KeyAction::TalkDown | KeyAction::TalkUp => {
            let by = if action == KeyAction::TalkUp { STEP_DB } else { -STEP_DB };
            let _ = rooms.update(call, |m| m.talk_db = step(m.talk_db, by));
            play(&["beep"])
        }
        KeyAction::Leave => vec![Effect::Leave("left")],
        KeyAction::ToggleLock => {
            let locked = rooms.get(&room).is_some_and(|r| !r.locked);
            let _ = rooms.set_locked(&room, locked);
            if locked {
                play(&["conf-locked"])
            } else {
                play(&["beep"])
            }
        }
        KeyAction::ToggleMuteAll => {
            // Mute every participant unless all already are; then unmute them.
            let all_muted = rooms
                .get(&room)
                .is_some_and(|r| r.members.iter().filter(|m| !m.is_moderator()).all(|m| m.muted));
            let _ = rooms.mute_participants(&room, !all_muted);
            play(&["beep"])
        }
        KeyAction::ToggleRecording => {
            let recording = rooms.get(&room).is_some_and(|r| r.recording.is_some());
            let done = if recording {
                rooms.stop_recording(&room).is_ok()
            } else {
                rooms.start_recording(&room).is_ok()
            };
            // Starting plays the recording notice to the whole room; stopping beeps.
            if done && recording { play(&["beep"]) } else { Vec::new() }
        }
        KeyAction::EjectLast => match rooms.last_joiner(&room, call) {
            Some(other) => vec![Effect::Eject(other)],
            None => Vec::new(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn join(rooms: &Rooms, call: u64, role: &str) {
        rooms
            .join("r", Member::new(call, "x".into(), role, false, call as i64))
            .unwrap();
    }

    #[test]
    fn the_default_keypad_map() {
        let rooms = Rooms::default();
        join(&rooms, 1, "moderator");
        join(&rooms, 2, "participant");
        join(&rooms, 3, "participant");
        assert_eq!(on_key(&rooms, 2, '1'), [Effect::Play(vec!["conf-muted".into()])]);
        assert!(rooms.member(2).unwrap().1.muted);
        assert_eq!(on_key(&rooms, 2, '1'), [Effect::Play(vec!["conf-unmuted".into()])]);
        assert_eq!(
            on_key(&rooms, 2, '2'),
            [Effect::Play(vec!["digit-3".into(), "conf-participants".into()])]
        );
        for _ in 0..10 {
            on_key(&rooms, 2, '6');
        }
        assert_eq!(rooms.member(2).unwrap().1.listen_db, 12);
        on_key(&rooms, 2, '7');
        assert_eq!(rooms.member(2).unwrap().1.talk_db, -3);
        assert_eq!(on_key(&rooms, 2, '#'), [Effect::Leave("left")]);
        // Moderator keys do nothing for participants.
        assert!(on_key(&rooms, 2, '3').is_empty());
        assert!(on_key(&rooms, 2, '8').is_empty());
        assert!(!rooms.get("r").unwrap().locked);
        on_key(&rooms, 1, '3');
        assert!(rooms.get("r").unwrap().locked);
        on_key(&rooms, 1, '5');
        let muted: Vec<bool> = rooms.get("r").unwrap().members.iter().map(|m| m.muted).collect();
        assert_eq!(muted, [false, true, true]);
        on_key(&rooms, 1, '5');
        assert!(rooms.get("r").unwrap().members.iter().all(|m| !m.muted));
        assert_eq!(on_key(&rooms, 1, '8'), [Effect::Eject(3)]);
        assert!(on_key(&rooms, 99, '1').is_empty());
    }

    #[test]
    fn a_room_can_change_its_keys() {
        let map = Keymap::with_overrides([("*", "head_count"), ("#", "none"), ("3", "record")]).unwrap();
        assert_eq!(map.action('*', false), Some(KeyAction::HeadCount));
        assert_eq!(map.action('2', false), None, "head count moved from 2 to *");
        assert_eq!(map.action('#', false), None);
        assert_eq!(map.action('3', true), Some(KeyAction::ToggleRecording));
        assert_eq!(map.action('3', false), None, "still a moderator's key");
        assert_eq!(map.action('0', true), None, "record moved from 0 to 3");
        assert_eq!(map.action('1', false), Some(KeyAction::ToggleMute));
        assert!(Keymap::with_overrides([("11", "mute")]).is_err());
        assert!(
            Keymap::with_overrides([("5", "dance")])
                .unwrap_err()
                .contains("unknown action")
        );
    }

    #[test]
    fn head_counts() {
        assert_eq!(head_count(1), ["conf-alone"]);
        assert_eq!(head_count(12), ["digit-1", "digit-2", "conf-participants"]);
    }
}
