//! An interpretation room's layout: its floor language, its language channels (each with a
//! booth) and the default level of the floor under a channel ("bleed").

use crate::room::mixer::MAX_CHANNELS;

/// The floor under a channel when a room does not say (dB; 0 = none).
pub const DEFAULT_BLEED_DB: i8 = -18;
/// The quietest bleed a listener can step down to before none.
const QUIETEST_BLEED_DB: i8 = -36;
/// One press of a bleed key.
const BLEED_STEP_DB: i8 = 6;

/// A language channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Channel {
    /// 1..=32: what listeners press after `*`, and the booth's name in the API.
    pub number: u8,
    /// As announced and shown ("Spanish").
    pub language: String,
    /// The prompt that offers it in its own language ("para español, marque uno"); None:
    /// the menu says "channel" and its number.
    pub prompt: Option<String>,
    /// The prompt that names it when chosen ("español"); None: "channel" and its number.
    pub announce: Option<String>,
    /// Another channel this booth can feed instead of its own (retour), switched by key.
    pub retour: Option<u8>,
}

/// A room's channels and bleed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// The floor's language, as shown ("English").
    pub floor_language: String,
    /// The menu's first entry ("for the original, English, press zero"); None: a generic one.
    pub floor_prompt: Option<String>,
    pub channels: Vec<Channel>,
    /// The floor under a staffed channel (dB below its level, -60..=-1; 0 = none).
    pub bleed_db: i8,
}

impl Layout {
    /// The language menu: the floor's entry, then each channel's in its own language.
    pub fn menu(&self) -> Vec<String> {
        let mut names = vec![self.floor_prompt.clone().unwrap_or_else(|| "interp-menu-floor".into())];
        for c in &self.channels {
            match &c.prompt {
                Some(p) => names.push(p.clone()),
                None => names.extend(channel_number(c.number)),
            }
        }
        names
    }

    /// The prompts that name what a member now hears (or a booth feeds).
    pub fn announce(&self, bus: crate::room::mixer::Bus) -> Vec<String> {
        match bus {
            crate::room::mixer::Bus::Floor => vec!["interp-floor".into()],
            crate::room::mixer::Bus::Channel(n) => match self.channel(n).and_then(|c| c.announce.clone()) {
                Some(p) => vec![p],
                None => channel_number(n),
            },
        }
    }

    /// The language `bus` carries: the floor's, or the channel's (None: no such channel).
    pub fn language(&self, bus: crate::room::mixer::Bus) -> Option<&str> {
        match bus {
            crate::room::mixer::Bus::Floor => Some(&self.floor_language),
            crate::room::mixer::Bus::Channel(n) => self.channel(n).map(|c| c.language.as_str()),
        }
    }

    /// A channel by number.
    pub fn channel(&self, number: u8) -> Option<&Channel> {
        self.channels.iter().find(|c| c.number == number)
    }

    /// Checks numbers (1..=32, each once), retours (another channel of the room) and the
    /// bleed; the message names the offending key.
    pub fn validate(&self) -> Result<(), String> {
        if self.channels.len() > MAX_CHANNELS as usize {
            return Err(format!("at most {MAX_CHANNELS} channels"));
        }
        if !(-60..=0).contains(&self.bleed_db) {
            return Err(format!("bleed_db = {}: must be -60..=0 (0 = none)", self.bleed_db));
        }
        for (i, c) in self.channels.iter().enumerate() {
            if !(1..=MAX_CHANNELS).contains(&c.number) {
                return Err(format!("channel {}: numbers are 1..={MAX_CHANNELS}", c.number));
            }
            if self.channels[..i].iter().any(|o| o.number == c.number) {
                return Err(format!("channel {}: listed twice", c.number));
            }
            if c.language.trim().is_empty() {
                return Err(format!("channel {}: language is empty", c.number));
            }
            if let Some(r) = c.retour
                && (r == c.number || self.channel(r).is_none())
            {
                return Err(format!(
                    "channel {}: retour {r} is not another channel of the room",
                    c.number
                ));
            }
        }
        Ok(())
    }
}

/// "channel" and the number's digits.
fn channel_number(n: u8) -> Vec<String> {
    let mut names = vec!["interp-channel".to_string()];
    names.extend(n.to_string().chars().map(|d| format!("digit-{d}")));
    names
}

/// A bleed in dB as the mixer's linear gain (0 dB = none, by the rooms' convention).
pub fn bleed_gain(bleed_db: i8) -> f32 {
    if bleed_db >= 0 {
        0.0
    } else {
        10f32.powf(bleed_db as f32 / 20.0)
    }
}

/// One bleed key press: louder goes up 6 dB to -6 at most (from none to the quietest
/// step), quieter goes down 6 dB and from the quietest step to none.
pub fn bleed_step(bleed_db: i8, louder: bool) -> i8 {
    let none = bleed_db >= 0;
    match (louder, none) {
        (true, true) => QUIETEST_BLEED_DB,
        (true, false) => (bleed_db + BLEED_STEP_DB).min(-BLEED_STEP_DB),
        (false, true) => 0,
        (false, false) if bleed_db - BLEED_STEP_DB < QUIETEST_BLEED_DB => 0,
        (false, false) => bleed_db - BLEED_STEP_DB,
    }
}
