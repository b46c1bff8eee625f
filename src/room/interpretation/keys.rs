//! The keypad in an interpretation room (pure: one key in, at most one action out).
//!
//! | keys | who | what |
//! |---|---|---|
//! | `*` N | listeners, speakers, moderators | hear channel N (`*0`: the floor) |
//! | `*` N | interpreters | take channel N as the booth's source (relay; `*0`: the floor) |
//! | `*` `*` | everyone | the language menu again (interpreters: the booth's state) |
//! | `1` | interpreters | hand-over: offer it (live), withdraw the offer, take it (partner) |
//! | `2` | interpreters | cough: microphone off / on again |
//! | `3` | interpreters | retour: feed the booth's retour channel / its own again |
//! | `1` | speakers, moderators | mute / unmute yourself |
//! | `4` / `6` | listeners, speakers, moderators | the floor under the channel quieter / louder |
//! | `7` / `9` | everyone | listen volume down / up |
//! | `0` N | moderators | force the hand-over in booth N |
//! | `#` | everyone | leave (after `*` or `0` with digits pending: end the number) |
//!
//! Right after joining (and after `**`), while the language menu is open, a listener's bare
//! digit naming a channel (or 0) chooses it as `*` and the digit would: "after the PIN,
//! press 1 for Spanish". The first choice closes the menu; from then on bare digits are
//! the keys above.
//!
//! Channel numbers above 9 take two digits: `*` `1` `2`. When a room has channels 1 and
//! 10-19, `*1` waits for a second digit and `#` ends it (`*1#` is channel 1).

use super::{Layout, Role};
use crate::room::mixer::Bus;

/// What a key sequence asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Key {
    Choose(Bus),
    Menu,
    Handover,
    Cough,
    Retour,
    Mute,
    BleedDown,
    BleedUp,
    ListenDown,
    ListenUp,
    ForceHandover(u8),
    Leave,
    /// A sequence that names no channel (`*5` in a room without channel 5).
    NoSuchChannel,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Pending {
    #[default]
    Nothing,
    /// `*` pressed, then these digits (None: none yet).
    Choose(Option<u8>),
    /// A moderator's `0`, then these digits.
    Force(Option<u8>),
}

/// One member's keypad state (a `*` waiting for its digits; the menu open).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Keypad {
    pending: Pending,
    /// A bare digit naming a channel chooses it (a listener who just joined, or asked for
    /// the menu again).
    menu_open: bool,
}

impl Keypad {
    /// A listener's keypad: the menu open, so a bare digit chooses.
    pub fn with_menu_open() -> Keypad {
        Keypad {
            menu_open: true,
            ..Keypad::default()
        }
    }

    /// One key. None while a sequence is incomplete or for a key the role does not use.
    pub fn press(&mut self, key: char, role: Role, layout: &Layout) -> Option<Key> {
        let key_seen = self.press_inner(key, role, layout);
        match key_seen {
            Some(Key::Choose(_)) => self.menu_open = false,
            Some(Key::Menu) if role == Role::Listener => self.menu_open = true,
            _ => {}
        }
        key_seen
    }

    fn press_inner(&mut self, key: char, role: Role, layout: &Layout) -> Option<Key> {
        let digit = key.to_digit(10).map(|d| d as u8);
        // The menu is open: a bare digit that names a channel (or the floor) chooses it.
        if self.menu_open
            && self.pending == Pending::Nothing
            && let Some(d) = digit
            && (d == 0 || layout.channel(d).is_some() || longer_exists(layout, d))
        {
            self.pending = Pending::Choose(None);
        }
        match (self.pending, key, digit) {
            (Pending::Choose(None), '*', _) => {
                self.pending = Pending::Nothing;
                Some(Key::Menu)
            }
            (Pending::Choose(None), _, Some(0)) => {
                self.pending = Pending::Nothing;
                Some(Key::Choose(Bus::Floor))
            }
            (Pending::Choose(sofar) | Pending::Force(sofar), _, Some(d)) => {
                let n = sofar.map_or(d as u16, |s| s as u16 * 10 + d as u16);
                let force = matches!(self.pending, Pending::Force(_));
                if sofar.is_none() && n > 0 && longer_exists(layout, n as u8) {
                    self.pending = if force {
                        Pending::Force(Some(n as u8))
                    } else {
                        Pending::Choose(Some(n as u8))
                    };
                    return None;
                }
                self.pending = Pending::Nothing;
                Some(channel_key(layout, n, force))
            }
            (Pending::Choose(Some(n)) | Pending::Force(Some(n)), '#', _) => {
                let force = matches!(self.pending, Pending::Force(_));
                self.pending = Pending::Nothing;
                Some(channel_key(layout, n as u16, force))
            }
            (Pending::Choose(_) | Pending::Force(_), '*', _) => {
                // A new `*` starts over.
                self.pending = Pending::Choose(None);
                None
            }
            (Pending::Choose(_) | Pending::Force(_), _, _) => {
                self.pending = Pending::Nothing;
                None
            }
            (Pending::Nothing, _, _) => self.single(key, role),
        }
    }

    fn single(&mut self, key: char, role: Role) -> Option<Key> {
        let interpreter = matches!(role, Role::Interpreter { .. });
        let hears_channels = !interpreter;
        let talks_on_floor = matches!(role, Role::Speaker | Role::Moderator);
        Some(match key {
            '*' => {
                self.pending = Pending::Choose(None);
                return None;
            }
            '#' => Key::Leave,
            '0' if role == Role::Moderator => {
                self.pending = Pending::Force(None);
                return None;
            }
            '1' if interpreter => Key::Handover,
            '2' if interpreter => Key::Cough,
            '3' if interpreter => Key::Retour,
            '1' if talks_on_floor => Key::Mute,
            '4' if hears_channels => Key::BleedDown,
            '6' if hears_channels => Key::BleedUp,
            '7' => Key::ListenDown,
            '9' => Key::ListenUp,
            _ => return None,
        })
    }
}

/// Whether some channel's number is `n` followed by another digit.
fn longer_exists(layout: &Layout, n: u8) -> bool {
    layout.channels.iter().any(|c| c.number / 10 == n && c.number >= 10)
}

fn channel_key(layout: &Layout, n: u16, force: bool) -> Key {
    match u8::try_from(n).ok().and_then(|n| layout.channel(n)) {
        Some(c) if force => Key::ForceHandover(c.number),
        Some(c) => Key::Choose(Bus::Channel(c.number)),
        None => Key::NoSuchChannel,
    }
}
