//! Rooms defined through the admin API (`PUT /api/v1/rooms/{room}/settings`): the keys of a
//! rooms.toml `[room.NAME]` table as JSON, checked as rooms.toml's are, put over rooms.toml
//! (a room of the same name is replaced) and kept in `data_dir/rooms/rooms.json` (0600:
//! it holds PINs) so that dialplan reloads and restarts keep them. An interpretation room's
//! floor, channels, booths and PINs are set this way as well as in rooms.toml. A change
//! reaches calls at once (`room_role`, joins); a live interpretation room keeps the layout
//! it opened with until its last member leaves.

use super::{PinError, Rooms, settings};
use std::collections::BTreeMap;
use std::path::Path;

/// The definitions as the API gave them (kept as given, checked again on load).
pub(super) type Definitions = BTreeMap<String, serde_json::Value>;

/// Reads the definitions kept at `path`: those that pass, and a message naming the file for
/// each that does not (never fatal to a start).
fn load(path: &Path) -> (Definitions, Vec<String>) {
    let all: Definitions = match crate::private_files::read_json(path) {
        Ok(d) => d.unwrap_or_default(),
        Err(why) => {
            return (
                Definitions::new(),
                vec![format!("{why}; the rooms defined through the API are not restored")],
            );
        }
    };
    let mut kept = Definitions::new();
    let mut problems = Vec::new();
    for (room, json) in all {
        match settings::parse_room_json(&room, &json) {
            Ok(_) => {
                kept.insert(room, json);
            }
            Err(why) => problems.push(format!("{}: room `{room}`: {why}; left out", path.display())),
        }
    }
    (kept, problems)
}

impl Rooms {
    /// Keeps the rooms defined through the admin API in `path` (`data_dir/rooms/rooms.json`)
    /// and restores those kept there; returns the problems found in the file.
    /// PINs kept in clear by an earlier version are rewritten as digests.
    pub fn keep_definitions_in(&mut self, path: std::path::PathBuf) -> Vec<String> {
        let (mut kept, mut problems) = load(&path);
        let before = kept.clone();
        kept.values_mut().for_each(|json| self.pin_key.digest_room_json(json));
        if kept != before {
            let written = serde_json::to_string_pretty(&kept)
                .map_err(std::io::Error::other)
                .and_then(|text| crate::private_files::write_atomically(&path, format!("{text}\n").as_bytes()));
            if let Err(e) = written {
                problems.push(format!(
                    "{}: the PINs could not be rewritten as digests: {e}",
                    path.display()
                ));
            }
        }
        *self.defined.lock().unwrap_or_else(|p| p.into_inner()) = kept;
        self.defined_file = Some(std::sync::Arc::from(path));
        self.reapply();
        problems
    }

    /// Defines (or redefines) `room` from a rooms.toml room table given as JSON. Nothing
    /// changes when the table is wrong or the file cannot be written.
    pub fn define(&self, room: &str, mut json: serde_json::Value) -> Result<(), PinError> {
        settings::parse_room_json(room, &json).map_err(|why| PinError::Invalid(format!("room `{room}`: {why}")))?;
        // Checked as given (lengths, PINs that must differ), kept with the PINs as digests.
        self.pin_key.digest_room_json(&mut json);
        self.change_definitions(|d| {
            d.insert(room.to_string(), json);
        })
    }

    /// Forgets the API's definition of `room` (rooms.toml's, if any, serves again); false
    /// when the API had not defined it.
    pub fn undefine(&self, room: &str) -> Result<bool, PinError> {
        let mut had = false;
        self.change_definitions(|d| had = d.remove(room).is_some())?;
        Ok(had)
    }

    fn change_definitions(&self, change: impl FnOnce(&mut Definitions)) -> Result<(), PinError> {
        let mut defined = self.defined.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = defined.clone();
        change(&mut next);
        if let Some(path) = &self.defined_file {
            let text = serde_json::to_string_pretty(&next).map_err(|e| PinError::NotKept(e.to_string()))?;
            crate::private_files::write_atomically(path, format!("{text}\n").as_bytes())
                .map_err(|e| PinError::NotKept(format!("cannot keep the room settings in {}: {e}", path.display())))?;
        }
        *defined = next;
        drop(defined);
        self.reapply();
        Ok(())
    }

    /// The flows' table again: rooms.toml's rooms, the API's definitions over them, the
    /// API's PINs over those.
    fn reapply(&self) {
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).clone();
        self.configure(settings::table(base));
    }

    /// rooms.toml's rooms with the API's definitions put over them.
    pub(super) fn with_definitions(&self, rooms: &mut std::collections::HashMap<String, settings::RoomSettings>) {
        let defined = self.defined.lock().unwrap_or_else(|p| p.into_inner());
        for (room, json) in defined.iter() {
            if let Ok(s) = settings::parse_room_json(room, json) {
                rooms.insert(room.clone(), s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gala() -> serde_json::Value {
        serde_json::json!({
            "floor": "English",
            "speaker_pin": "1212",
            "channels": [{ "number": 1, "language": "German", "interpreter_pin": "5656" }],
        })
    }

    #[test]
    fn a_room_defined_through_the_api_is_kept_and_restored_over_rooms_toml() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("tolk-defined-{}", fastrand::u64(..)));
        let file = dir.join("rooms").join("rooms.json");
        let key = || crate::keys::SecretKey::from_bytes([5; 32]);
        let mut rooms = Rooms::default();
        rooms.keep_pins_under(key());
        assert!(rooms.keep_definitions_in(file.clone()).is_empty());
        rooms.define("gala", gala()).unwrap();
        assert_eq!(rooms.role_of("gala", "5656"), Some("interpreter"));
        assert_eq!(rooms.booth_of("gala", "5656"), Some(1));
        assert_eq!(rooms.role_of("gala", "1212"), Some("speaker"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "it holds PIN digests");
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(
            !text.contains("5656") && !text.contains("1212"),
            "PINs kept as digests: {text}"
        );
        // A wrong table changes nothing and its message quotes no PIN.
        let Err(PinError::Invalid(why)) = rooms.define(
            "gala",
            serde_json::json!({ "floor": "English", "speaker_pin": "98765", "listener_pin": "98765" }),
        ) else {
            panic!("two roles with one PIN must be refused")
        };
        assert!(!why.contains("98765"), "{why}");
        let Err(PinError::Invalid(why)) = rooms.define("gala", serde_json::json!({ "flor": "English" })) else {
            panic!("an unknown key must be refused")
        };
        assert!(why.contains("unknown key `flor`"), "{why}");
        assert_eq!(rooms.role_of("gala", "5656"), Some("interpreter"));
        // A restart restores it, and a dialplan reload (rooms.toml without it) keeps it.
        let mut again = Rooms::default();
        again.keep_pins_under(key());
        assert!(again.keep_definitions_in(file.clone()).is_empty());
        assert_eq!(again.role_of("gala", "5656"), Some("interpreter"));
        again.configure(settings::table(std::collections::HashMap::new()));
        let layout = again.interpretation_layout("gala").expect("an interpretation room");
        assert_eq!(layout.channels[0].language, "German");
        // Forgotten: rooms.toml (here: nothing) serves again.
        assert_eq!(again.undefine("gala"), Ok(true));
        assert_eq!(again.undefine("gala"), Ok(false));
        assert_eq!(again.role_of("gala", "5656"), None);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
