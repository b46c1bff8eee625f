//! PINs set through the admin API (`PUT /api/v1/rooms/{room}/pins`), kept in
//! `data_dir/rooms/pins.json` so that a restart does not fall back to `rooms.toml`'s. The
//! file is the gateway's own state, not configuration: written whole (a temporary file,
//! fsync, rename: a crash leaves the old file or the new one) with mode 0600. PINs are only
//! ever compared, so they are kept as keyed digests (HMAC-SHA256 under
//! `data_dir/keys/pins.key`, [`PinKey`]): the file alone does not give them away, even though
//! a 4-digit PIN has only 10,000 values. A damaged file or entry is reported and left out,
//! never fatal to a start.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

/// A room's participant and moderator PINs (`None`: no PIN of that kind), as stored.
pub type Pins = (Option<String>, Option<String>);

/// How a PIN kept as its digest begins.
pub const DIGEST_PREFIX: &str = "hmac-sha256:";

/// Whether `stored` is a PIN kept as its keyed digest (`hmac-sha256:` and 64 hex digits).
pub fn is_digest(stored: &str) -> bool {
    stored
        .strip_prefix(DIGEST_PREFIX)
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The key PINs are kept under. Without one (tests, `tolk flow run`) PINs stay as given.
#[derive(Clone, Debug, Default)]
pub struct PinKey(Option<crate::keys::SecretKey>);

impl PinKey {
    pub fn new(key: crate::keys::SecretKey) -> PinKey {
        PinKey(Some(key))
    }

    /// The form a PIN is kept in: its digest (a digest given is kept as it is).
    pub fn stored(&self, pin: &str) -> String {
        match &self.0 {
            Some(key) if !is_digest(pin) => format!("{DIGEST_PREFIX}{}", key.hmac_hex(pin.as_bytes())),
            _ => pin.to_string(),
        }
    }

    /// Whether `entered` (what a caller typed) is the PIN kept as `stored`, clear or digest.
    pub fn matches(&self, stored: &str, entered: &str) -> bool {
        if is_digest(stored) {
            self.0.is_some() && !is_digest(entered) && self.stored(entered).eq_ignore_ascii_case(stored)
        } else {
            stored == entered
        }
    }

    /// A room table (rooms.toml's keys as JSON, from the admin API) with its PINs as digests.
    pub fn digest_room_json(&self, json: &mut serde_json::Value) {
        for field in ["pin", "moderator_pin", "speaker_pin", "listener_pin"] {
            if let Some(p) = json.get(field).and_then(|v| v.as_str()).map(|p| self.stored(p)) {
                json[field] = p.into();
            }
        }
        for channel in json
            .get_mut("channels")
            .and_then(|c| c.as_array_mut())
            .into_iter()
            .flatten()
        {
            if let Some(p) = channel
                .get("interpreter_pin")
                .and_then(|v| v.as_str())
                .map(|p| self.stored(p))
            {
                channel["interpreter_pin"] = p.into();
            }
        }
    }
}

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
        // (After the file's name: the random folder name may hold those digits.)
        let message = problems[0].rsplit("pins.json").next().unwrap_or_default();
        assert!(!message.contains("98765"), "{problems:?}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
