//! Prompts: the shipped set in `sounds/` (a catalog of names to WAV files, generated once with
//! espeak-ng by `scripts/gen-sounds.sh` and committed) or any WAV path, decoded to mono PCM at
//! the rate a leg or room needs and cached per (prompt, rate). G.711 payloads are cached per
//! law as well (the codec has no state, so a prompt encodes the same every time). Playing
//! them out is [`crate::media::prompt::PromptPlayer`]'s job.

use crate::media::codec::g711::{linear_to_alaw, linear_to_ulaw};
use crate::media::prompt::{G711Law, resampled};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Why a prompt could not be played.
#[derive(Debug, thiserror::Error)]
pub enum PromptError {
    #[error("no prompt named `{0}` in the catalog")]
    Unknown(String),
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("{path}:{line}: {message}")]
    Catalog { path: String, line: usize, message: String },
}

/// Decoded prompts by (name, sample rate).
type PcmCache = Mutex<HashMap<(String, u32), Arc<[i16]>>>;
/// G.711 payloads by (name, law).
type G711Cache = Mutex<HashMap<(String, G711Law), Arc<[u8]>>>;

/// The prompt catalog with its caches. Shared between calls (`Arc`); loading is lazy.
#[derive(Debug)]
pub struct PromptCatalog {
    dir: PathBuf,
    files: HashMap<String, PathBuf>,
    pcm_cache: PcmCache,
    g711_cache: G711Cache,
}

#[derive(serde::Deserialize)]
struct Entry {
    file: String,
    #[allow(dead_code)]
    text: Option<String>,
}

impl PromptCatalog {
    /// Reads `dir/catalog.toml`.
    pub fn load(dir: &Path) -> Result<PromptCatalog, PromptError> {
        let path = dir.join("catalog.toml");
        let text = std::fs::read_to_string(&path).map_err(|e| PromptError::File {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        let entries: HashMap<String, Entry> =
            toml::from_str(&text).map_err(|e: toml::de::Error| PromptError::Catalog {
                path: path.display().to_string(),
                line: e
                    .span()
                    .map(|s| text[..s.start.min(text.len())].matches('\n').count() + 1)
                    .unwrap_or(1),
                message: e.message().to_string(),
            })?;
        Ok(PromptCatalog {
            dir: dir.to_path_buf(),
            files: entries.into_iter().map(|(k, v)| (k, dir.join(v.file))).collect(),
            pcm_cache: Mutex::new(HashMap::new()),
            g711_cache: Mutex::new(HashMap::new()),
        })
    }

    /// Prompt names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut v: Vec<String> = self.files.keys().cloned().collect();
        v.sort();
        v
    }

    fn resolve(&self, name_or_path: &str) -> Result<PathBuf, PromptError> {
        if let Some(p) = self.files.get(name_or_path) {
            return Ok(p.clone());
        }
        if name_or_path.ends_with(".wav") {
            // A path relative to the sounds directory, never outside it.
            let p = Path::new(name_or_path);
            if p.is_absolute() || p.components().any(|c| matches!(c, std::path::Component::ParentDir)) {
                return Err(PromptError::Unknown(name_or_path.to_string()));
            }
            return Ok(self.dir.join(p));
        }
        Err(PromptError::Unknown(name_or_path.to_string()))
    }

    /// The prompt as mono PCM at `rate`.
    pub fn pcm(&self, name_or_path: &str, rate: u32) -> Result<Arc<[i16]>, PromptError> {
        let key = (name_or_path.to_string(), rate);
        if let Some(hit) = self.pcm_cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let path = self.resolve(name_or_path)?;
        let pcm = load_resampled(&path, rate)?;
        if let Ok(mut c) = self.pcm_cache.lock() {
            c.insert(key, pcm.clone());
        }
        Ok(pcm)
    }

    /// The prompt as G.711 payload bytes (8 kHz), cached.
    pub fn g711(&self, name_or_path: &str, law: G711Law) -> Result<Arc<[u8]>, PromptError> {
        let key = (name_or_path.to_string(), law);
        if let Some(hit) = self.g711_cache.lock().ok().and_then(|c| c.get(&key).cloned()) {
            return Ok(hit);
        }
        let pcm = self.pcm(name_or_path, 8000)?;
        let bytes: Arc<[u8]> = match law {
            G711Law::Ulaw => pcm.iter().map(|&s| linear_to_ulaw(s)).collect(),
            G711Law::Alaw => pcm.iter().map(|&s| linear_to_alaw(s)).collect(),
        };
        if let Ok(mut c) = self.g711_cache.lock() {
            c.insert(key, bytes.clone());
        }
        Ok(bytes)
    }
}

/// A mono WAV at `rate`.
fn load_resampled(path: &Path, rate: u32) -> Result<Arc<[i16]>, PromptError> {
    let (samples, file_rate) = read_mono_wav(path)?;
    Ok(resampled(&samples, file_rate, rate))
}

/// Reads a PCM16 WAV as mono (channels averaged) with its rate.
pub fn read_mono_wav(path: &Path) -> Result<(Vec<i16>, u32), PromptError> {
    let err = |m: String| PromptError::File {
        path: path.display().to_string(),
        message: m,
    };
    let mut reader = hound::WavReader::open(path).map_err(|e| err(e.to_string()))?;
    let spec = reader.spec();
    if spec.sample_format != hound::SampleFormat::Int || spec.bits_per_sample != 16 {
        return Err(err(format!(
            "{} bit {:?} audio; prompts must be PCM16",
            spec.bits_per_sample, spec.sample_format
        )));
    }
    let channels = spec.channels.max(1) as usize;
    let raw: Result<Vec<i16>, _> = reader.samples::<i16>().collect();
    let raw = raw.map_err(|e| err(e.to_string()))?;
    let mono = raw
        .chunks(channels)
        .map(|c| (c.iter().map(|&s| s as i32).sum::<i32>() / c.len() as i32) as i16)
        .collect();
    Ok((mono, spec.sample_rate))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn catalog() -> PromptCatalog {
        PromptCatalog::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("sounds")).unwrap()
    }

    #[test]
    fn every_catalog_prompt_loads_at_every_rate() {
        let c = catalog();
        for name in [
            "conf-enter-pin",
            "conf-invalid-pin",
            "conf-joined",
            "conf-alone",
            "conf-locked",
            "conf-muted",
            "conf-unmuted",
            "interp-menu-floor",
            "interp-menu-es",
            "interp-live",
            "optout-confirmed",
            "goodbye",
            "digit-0",
            "digit-9",
        ] {
            assert!(c.names().contains(&name.to_string()), "{name} in the catalog");
        }
        for name in c.names() {
            let p8 = c.pcm(&name, 8000).unwrap();
            let p48 = c.pcm(&name, 48_000).unwrap();
            assert!(p8.len() > 2000, "{name}: a quarter second at least");
            let ratio = p48.len() as f64 / p8.len() as f64;
            assert!((ratio - 6.0).abs() < 0.1, "{name}: {ratio}");
            // Speech, not silence.
            let rms = (p8.iter().map(|&s| (s as f64).powi(2)).sum::<f64>() / p8.len() as f64).sqrt();
            assert!(rms > 1000.0, "{name}: rms {rms:.0}");
        }
    }

    #[test]
    fn prompts_are_cached_per_rate_and_law() {
        let c = catalog();
        let a = c.pcm("goodbye", 16_000).unwrap();
        let b = c.pcm("goodbye", 16_000).unwrap();
        assert!(Arc::ptr_eq(&a, &b));
        let u = c.g711("goodbye", G711Law::Ulaw).unwrap();
        assert!(Arc::ptr_eq(&u, &c.g711("goodbye", G711Law::Ulaw).unwrap()));
        assert_eq!(u.len(), c.pcm("goodbye", 8000).unwrap().len());
    }

    #[test]
    fn unknown_names_and_escaping_paths_are_refused() {
        let c = catalog();
        assert!(matches!(c.pcm("no-such-prompt", 8000), Err(PromptError::Unknown(_))));
        assert!(matches!(c.pcm("../Cargo.toml.wav", 8000), Err(PromptError::Unknown(_))));
        assert!(matches!(c.pcm("/etc/passwd.wav", 8000), Err(PromptError::Unknown(_))));
        assert!(matches!(c.pcm("missing.wav", 8000), Err(PromptError::File { .. })));
    }
}
