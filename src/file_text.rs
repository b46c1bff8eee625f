//! The text files tolk reads (`tolk.toml`, `numbers.toml`, `rooms.toml`, flows): line numbers
//! of byte offsets and errors that name the file and the line. The bottom of the crate: it
//! imports no other module of tolk.

use std::path::{Path, PathBuf};

/// A file that does not load (TOML syntax, a bad value, a flow that does not compile), with
/// where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}:{line}: {reason}", file.display())]
pub struct FileError {
    pub file: PathBuf,
    /// 1-based; 0 when the file as a whole is at fault (it cannot be read).
    pub line: usize,
    pub reason: String,
}

/// The 1-based line of byte `offset` in `text`.
pub fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Deserialises a TOML file's text; a syntax or shape error names the file and the line.
pub fn parse_toml<T: serde::de::DeserializeOwned>(file: &Path, text: &str) -> Result<T, Vec<FileError>> {
    toml::from_str(text).map_err(|e: toml::de::Error| {
        vec![FileError {
            file: file.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(1),
            reason: e.message().to_string(),
        }]
    })
}
