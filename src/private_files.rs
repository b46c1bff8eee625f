//! Folders and files that hold personal data (the CDR journal, `rejected.jsonl`, recordings,
//! room PINs, the text-to-speech cache): folders 0700 and files 0600, so that only the
//! gateway's own user reads them whatever the umask (`docs/PRIVACY.md`). The bottom of the
//! crate: it imports no other module of tolk.

use std::fs::OpenOptions;
use std::io;
use std::path::Path;

/// A folder's mode: the owner only.
pub const DIR_MODE: u32 = 0o700;
/// A file's mode: the owner reads and writes.
pub const FILE_MODE: u32 = 0o600;

/// Creates `dir` and its missing parents (the new ones 0700), and makes `dir` itself 0700
/// if it was there already with a wider mode.
pub fn create_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        std::fs::DirBuilder::new().recursive(true).mode(DIR_MODE).create(dir)?;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != DIR_MODE {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(DIR_MODE))?;
        }
        Ok(())
    }
    #[cfg(not(unix))]
    std::fs::create_dir_all(dir)
}

/// `OpenOptions` whose files, when they are created, are 0600 (an existing file keeps its
/// mode: see [`restrict`]).
pub fn options() -> OpenOptions {
    let mut opts = OpenOptions::new();
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, FILE_MODE);
    opts
}

/// Makes a file 0600: one another program wrote (espeak-ng), or one made before this rule.
pub fn restrict(path: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(FILE_MODE))
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        Ok(())
    }
}

/// Reads the JSON state kept at `path` by [`write_atomically`]: `Ok(None)` when there is no
/// file yet; an error names the file (and for bad JSON the line, column and kind only:
/// serde's message can quote a value, and these files hold PINs).
pub fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("{}: cannot read: {e}", path.display())),
    };
    serde_json::from_str(&text).map(Some).map_err(|e| {
        format!(
            "{}:{}:{}: not valid JSON ({:?})",
            path.display(),
            e.line(),
            e.column(),
            e.classify()
        )
    })
}

/// Replaces `path` whole with `bytes`, 0600 in a 0700 folder: a temporary file beside it
/// (created exclusively, so its mode is ours and a link planted there is not followed),
/// fsync, rename, fsync of the folder. A crash leaves the old file or the new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    if let Some(dir) = path.parent() {
        create_dir(dir)?;
    }
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(".tmp");
    let tmp = path.with_file_name(tmp_name);
    // A leftover from a crash mid-write is removed first.
    let _ = std::fs::remove_file(&tmp);
    let mut f = options().write(true).create_new(true).open(&tmp)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn folders_are_0700_and_files_0600_whatever_was_there() {
        let base = std::env::temp_dir().join(format!("tolk-private-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        let dir = base.join("a/b");
        create_dir(&dir).unwrap();
        assert_eq!((mode(&base.join("a")), mode(&dir)), (DIR_MODE, DIR_MODE));
        // An existing folder with a wider mode is tightened.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        create_dir(&dir).unwrap();
        assert_eq!(mode(&dir), DIR_MODE);
        let file = dir.join("f");
        drop(options().write(true).create_new(true).open(&file).unwrap());
        assert_eq!(mode(&file), FILE_MODE);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        restrict(&file).unwrap();
        assert_eq!(mode(&file), FILE_MODE);
        std::fs::remove_dir_all(&base).unwrap();
    }
}
