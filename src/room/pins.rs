//! PINs set through the admin API (`PUT /api/v1/rooms/{room}/pins`), kept in
//! `data_dir/rooms/pins.json` so that a restart does not fall back to `rooms.toml`'s. The
//! file is the gateway's own state, not configuration: written whole (a temporary file,
//! fsync, rename: a crash leaves the old file or the new one) with mode 0600, since PINs are
//! secrets. A damaged file or entry is reported and left out, never fatal to a start.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A room's participant and moderator PINs (`None`: no PIN of that kind).
pub type Pins = (Option<String>, Option<String>);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    pin: Option<String>,
    moderator_pin: Option<String>,
}

/// Reads the PINs kept at `path` (none when it does not exist yet). Problems (a damaged file,
/// an entry that is not a valid PIN) come back as messages naming the file, with the entries
/// that passed.
pub fn load(path: &Path) -> (HashMap<String, Pins>, Vec<String>) {
    let entries: BTreeMap<String, Entry> = match crate::private_files::read_json(path) {
        Ok(e) => e.unwrap_or_default(),
        Err(why) => {
            return (
                HashMap::new(),
                vec![format!("{why}; the PINs set through the API are not restored")],
            );
        }
    };
    let mut pins = HashMap::new();
    let mut problems = Vec::new();
    for (room, e) in entries {
        let bad = [&e.pin, &e.moderator_pin]
            .into_iter()
            .flatten()
            .any(|p| super::settings::valid_pin(p).is_err());
        let same = e.pin.is_some() && e.pin == e.moderator_pin;
        if same {
            // Everyone would join as the moderator (the moderator PIN is tried first).
            problems.push(format!(
                "{}: room `{room}`: the same PIN for participants and moderators; left out",
                path.display()
            ));
        } else if bad {
            // The PIN itself is not repeated into the log.
            problems.push(format!(
                "{}: room `{room}`: a PIN that is not 4 to 16 digits; left out",
                path.display()
            ));
        } else {
            pins.insert(room, (e.pin, e.moderator_pin));
        }
    }
    (pins, problems)
}

/// Writes `pins` to `path` whole, replacing what was there.
pub fn save(path: &Path, pins: &HashMap<String, Pins>) -> std::io::Result<()> {
    let entries: BTreeMap<&str, Entry> = pins
        .iter()
        .map(|(room, (pin, moderator_pin))| {
            (
                room.as_str(),
                Entry {
                    pin: pin.clone(),
                    moderator_pin: moderator_pin.clone(),
                },
            )
        })
        .collect();
    let text = serde_json::to_string_pretty(&entries).map_err(std::io::Error::other)?;
    crate::private_files::write_atomically(path, format!("{text}\n").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_come_back_as_saved_and_bad_entries_are_reported_not_fatal() {
        let dir = std::env::temp_dir().join(format!("tolk-pins-{}", fastrand::u64(..)));
        let path = dir.join("rooms").join("pins.json");
        assert_eq!(load(&path), (HashMap::new(), Vec::new()), "no file yet: no PINs");
        let mut pins = HashMap::new();
        pins.insert("demo".to_string(), (Some("4321".to_string()), Some("8765".to_string())));
        pins.insert("open \"room\"".to_string(), (None, None));
        save(&path, &pins).unwrap();
        assert_eq!(load(&path), (pins, Vec::new()));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "PINs are secrets");
        }
        // A hand-edited entry that is not a PIN is left out; the others stay.
        std::fs::write(
            &path,
            "{\"a\": {\"pin\": \"12x\", \"moderator_pin\": null},\n \"b\": {\"pin\": \"7777\", \"moderator_pin\": null},\n \"c\": {\"pin\": \"777\", \"moderator_pin\": null}}",
        )
        .unwrap();
        let (pins, problems) = load(&path);
        assert_eq!(pins.len(), 1);
        assert_eq!(pins["b"], (Some("7777".to_string()), None));
        // Three digits are too few (room::settings::MIN_PIN_DIGITS).
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(
            problems[0].contains("room `a`") && problems[0].contains("pins.json"),
            "{problems:?}"
        );
        assert!(!problems[0].contains("12x"), "a PIN is never logged: {problems:?}");
        // The same PIN for both roles would make everyone a moderator: left out.
        std::fs::write(&path, "{\"a\": {\"pin\": \"5555\", \"moderator_pin\": \"5555\"}}").unwrap();
        let (pins, problems) = load(&path);
        assert!(pins.is_empty() && problems[0].contains("same PIN"), "{problems:?}");
        // A leftover temporary file with a wide mode does not pass its mode on.
        let tmp = path.with_extension("json.tmp");
        std::fs::write(&tmp, "old").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o666)).unwrap();
            save(&path, &HashMap::new()).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        // A damaged file: nothing restored, the file and line named.
        std::fs::write(&path, "{\n\"a\": {").unwrap();
        let (pins, problems) = load(&path);
        assert!(pins.is_empty());
        assert!(problems[0].contains("pins.json:2"), "{problems:?}");
        // A PIN of the wrong type: serde's message would quote it; this one does not.
        std::fs::write(&path, "{\"a\": {\"pin\": 98765, \"moderator_pin\": null}}").unwrap();
        let (pins, problems) = load(&path);
        assert!(pins.is_empty());
        assert!(!problems[0].contains("98765"), "{problems:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
