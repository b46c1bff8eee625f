//! Wall-clock time for the I/O shell, as one integer type every layer can share.
//!
//! Sans-IO cores never call [`now_micros`]; they get time passed in. The shell (gateway,
//! room registry, CDR writer) reads it here, so no layer has to import the CDR model for a
//! timestamp.

/// Microseconds since the Unix epoch (UTC). Kept as an integer so the journal, the binary
/// COPY encoder and tests need no calendar crate.
pub type Micros = i64;

/// The current wall-clock time in [`Micros`] (0 if the clock is before 1970).
pub fn now_micros() -> Micros {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn now_is_after_2020() {
        // 2020-01-01T00:00:00Z in microseconds.
        assert!(super::now_micros() > 1_577_836_800_000_000);
    }
}
