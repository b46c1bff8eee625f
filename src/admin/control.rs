//! The local control socket: a Unix socket in `data_dir` (`admin.control_socket`) that serves
//! the same `/api/v1` as the admin listener to the owner of the gateway's process, with no
//! token. The CLI reaches a running gateway through it (`tolk rooms`, `tolk cdr erase`,
//! `tolk optout`, `tolk dialplan reload`), so an operator on the box needs no admin token and
//! no reconfiguration to act on live state.
//!
//! Who may connect is decided by the kernel twice: the socket file is 0600, and every
//! accepted peer's credentials (`SO_PEERCRED`) must name the gateway's own user or root;
//! anyone else is closed before a byte is read.

use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The longest path a Unix socket address holds on Linux (`sun_path` less its NUL).
const MAX_SOCKET_PATH: usize = 107;

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("admin.control_socket: {path}: {why}")]
    Bind { path: String, why: String },
    #[error("another gateway is running on this data_dir (its control socket {path} answers)")]
    InUse { path: String },
}

/// The bound socket; removes its file when dropped (the gateway stopped).
pub struct ControlSocket {
    path: PathBuf,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Accepts only peers running as the socket file's owner (or root).
pub struct OwnerOnly {
    listener: tokio::net::UnixListener,
    owner: u32,
}

/// Binds the control socket at `path`: a stale file left by a gateway that died is replaced,
/// a live one (it answers) is refused.
pub fn bind(path: &Path) -> Result<(OwnerOnly, ControlSocket), ControlError> {
    let shown = path.display().to_string();
    let fail = |why: String| ControlError::Bind {
        path: shown.clone(),
        why,
    };
    if path.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(fail(format!(
            "{} bytes, but a Unix socket path holds at most {MAX_SOCKET_PATH}: use a shorter data_dir or an absolute admin.control_socket",
            path.as_os_str().len()
        )));
    }
    // A missing folder is made 0700; an existing one (`data_dir`) keeps its mode, which the
    // private PostgreSQL cluster's own user may need to pass through to `data_dir/pg`.
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(crate::private_files::DIR_MODE)
            .create(dir)
            .map_err(|e| fail(format!("cannot create {}: {e}", dir.display())))?;
    }
    // Only a socket nobody listens on (connection refused) is ours to replace: a live one is
    // another gateway, anything else (a file, another user's socket) is not ours to delete.
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        use std::os::unix::fs::FileTypeExt;
        if !meta.file_type().is_socket() {
            return Err(fail("something other than a socket is there; not replaced".into()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ControlError::InUse { path: shown }),
            Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                std::fs::remove_file(path).map_err(|e| fail(format!("cannot remove the stale socket: {e}")))?
            }
            Err(e) => {
                return Err(fail(format!(
                    "a socket is there that cannot be checked ({e}); not replaced"
                )));
            }
        }
    }
    let listener = tokio::net::UnixListener::bind(path).map_err(|e| fail(e.to_string()))?;
    let guard = ControlSocket {
        path: path.to_path_buf(),
    };
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|e| fail(e.to_string()))?;
    // The process's own user: who may connect (besides root).
    // SAFETY: geteuid has no preconditions and cannot fail.
    let owner = unsafe { libc::geteuid() };
    Ok((OwnerOnly { listener, owner }, guard))
}

impl axum::serve::Listener for OwnerOnly {
    type Io = tokio::net::UnixStream;
    type Addr = tokio::net::unix::SocketAddr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        loop {
            match self.listener.accept().await {
                Ok((stream, addr)) => match stream.peer_cred() {
                    Ok(cred) if cred.uid() == self.owner || cred.uid() == 0 => return (stream, addr),
                    Ok(cred) => tracing::warn!(uid = cred.uid(), "control socket: a peer of another user was refused"),
                    Err(e) => tracing::warn!(error = %e, "control socket: no peer credentials; refused"),
                },
                // Out of descriptors and the like: wait a little rather than spin.
                Err(e) => {
                    tracing::warn!(error = %e, "control socket: accept failed");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_socket_is_owner_only_and_refuses_a_second_gateway() {
        let dir = std::env::temp_dir().join(format!("tolk-ctl-{}-{}", std::process::id(), fastrand::u32(..)));
        let path = dir.join("control.sock");
        let (listener, guard) = bind(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777, 0o700);
        assert!(matches!(bind(&path), Err(ControlError::InUse { .. })));
        drop(listener);
        // The gateway died without removing the file: the next one takes the path over.
        std::mem::forget(guard);
        assert!(path.exists());
        let (_listener, guard) = bind(&path).unwrap();
        drop(guard);
        assert!(!path.exists(), "the file goes with the gateway");
        let long = dir.join("x".repeat(120));
        assert!(matches!(bind(&long), Err(ControlError::Bind { .. })));
        // A file that is not a socket (a mistyped path) is not deleted.
        let file = dir.join("notes.txt");
        std::fs::write(&file, b"keep me").unwrap();
        assert!(matches!(bind(&file), Err(ControlError::Bind { .. })));
        assert_eq!(std::fs::read(&file).unwrap(), b"keep me");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
