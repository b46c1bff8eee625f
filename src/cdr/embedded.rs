//! The private PostgreSQL cluster `tolk serve` runs when no database URL is configured
//! (DESIGN.md, "Contracts"): `initdb` once under `data_dir/pg`, then `pg_ctl start` on a Unix
//! socket only (no TCP port to collide with), `pg_ctl stop` at exit. It uses the system's
//! PostgreSQL binaries (Debian's `postgresql` package). PostgreSQL refuses to run as root, so
//! when tolk runs as root the cluster runs as the `postgres` system user.

use super::db::DbTarget;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The database and role tolk uses in its private cluster.
pub const DATABASE: &str = "tolk";
pub const USER: &str = "tolk";

/// Errors starting the private cluster.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    #[error(
        "no PostgreSQL server binaries (initdb, pg_ctl) found in /usr/lib/postgresql/*/bin or PATH: install Debian's `postgresql` package, or set database.url (DATABASE_URL) to a server"
    )]
    NotInstalled,
    #[error("tolk runs as root and PostgreSQL refuses to; no `postgres` system user was found to run it as")]
    NoUser,
    #[error("{0}: {1}")]
    Io(String, #[source] std::io::Error),
    #[error("{what} failed: {output}")]
    Command { what: String, output: String },
}

/// A running private cluster.
#[derive(Debug)]
pub struct EmbeddedPostgres {
    /// This process started it (else it adopted a running one).
    pub started: bool,
    bin: PathBuf,
    data: PathBuf,
    socket_dir: PathBuf,
    run_as: Option<(u32, u32)>,
}

/// The newest PostgreSQL server binaries on this machine.
pub fn find_binaries() -> Option<PathBuf> {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").exists() && bin.join("pg_ctl").exists()).then_some((v, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Some(bin);
    }
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths).find(|p| p.join("initdb").exists() && p.join("pg_ctl").exists())
    })
}

/// uid and gid of a user, from /etc/passwd.
fn lookup_user(name: &str) -> Option<(u32, u32)> {
    let passwd = std::fs::read_to_string("/etc/passwd").ok()?;
    passwd.lines().find_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        (f.len() > 3 && f[0] == name).then(|| Some((f[2].parse().ok()?, f[3].parse().ok()?)))?
    })
}

impl EmbeddedPostgres {
    /// Initialises (first run) and starts the cluster under `data_dir/pg`, or adopts one
    /// already running there (left by a crash); creates the `tolk` database.
    pub fn start(data_dir: &Path) -> Result<EmbeddedPostgres, EmbeddedError> {
        let bin = find_binaries().ok_or(EmbeddedError::NotInstalled)?;
        let io = |p: &Path| {
            let p = p.display().to_string();
            move |e| EmbeddedError::Io(p, e)
        };
        std::fs::create_dir_all(data_dir).map_err(io(data_dir))?;
        let data_dir = std::fs::canonicalize(data_dir).map_err(io(data_dir))?;
        let data = data_dir.join("pg");
        // The effective uid, from /proc (no libc binding needed for one number).
        let run_as = if current_uid() == Some(0) {
            Some(lookup_user("postgres").ok_or(EmbeddedError::NoUser)?)
        } else {
            None
        };
        // Unix socket paths are limited to 107 bytes; a deep data_dir gets its socket in /tmp.
        let socket_dir = if data.join(".s.PGSQL.5432").as_os_str().len() < 100 {
            data.clone()
        } else {
            let h = crc32fast::hash(data.as_os_str().as_encoded_bytes());
            PathBuf::from(format!("/tmp/tolk-pg-{h:08x}"))
        };
        let mut pg = EmbeddedPostgres {
            started: false,
            bin,
            data,
            socket_dir,
            run_as,
        };
        if !pg.data.join("PG_VERSION").exists() {
            pg.initdb()?;
        }
        if pg.socket_dir != pg.data {
            std::fs::create_dir_all(&pg.socket_dir).map_err(io(&pg.socket_dir))?;
            pg.chown(&pg.socket_dir)?;
        }
        if !pg.running() {
            let opts = format!(
                "-c listen_addresses='' -k {} -c max_connections=40 -c shared_buffers=32MB",
                pg.socket_dir.display()
            );
            let log = pg.data.join("postgres.log");
            pg.run(
                "pg_ctl start",
                pg.command("pg_ctl")
                    .arg("-D")
                    .arg(&pg.data)
                    .arg("-l")
                    .arg(&log)
                    .args(["-w", "-t", "60", "-o", &opts, "start"]),
            )?;
            pg.started = true;
            tracing::info!(data = %pg.data.display(), "started the private PostgreSQL cluster");
        } else {
            tracing::info!(data = %pg.data.display(), "adopted the private PostgreSQL cluster already running");
        }
        pg.ensure_database()?;
        Ok(pg)
    }

    /// How to connect.
    pub fn target(&self) -> DbTarget {
        DbTarget::Socket {
            dir: self.socket_dir.clone(),
            database: DATABASE.into(),
            user: USER.into(),
        }
    }

    /// Stops the cluster (fast shutdown: open sessions are ended, data is safe).
    pub fn stop(&self) -> Result<(), EmbeddedError> {
        self.run(
            "pg_ctl stop",
            self.command("pg_ctl")
                .arg("-D")
                .arg(&self.data)
                .args(["-m", "fast", "-w", "stop"]),
        )
        .map(|_| ())
    }

    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    fn initdb(&self) -> Result<(), EmbeddedError> {
        std::fs::create_dir_all(&self.data).map_err(|e| EmbeddedError::Io(self.data.display().to_string(), e))?;
        self.chown(&self.data)?;
        self.run(
            "initdb",
            self.command("initdb").arg("-D").arg(&self.data).args([
                "-U",
                USER,
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-instructions",
            ]),
        )?;
        tracing::info!(data = %self.data.display(), "initialised a private PostgreSQL cluster");
        Ok(())
    }

    fn running(&self) -> bool {
        self.command("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .arg("status")
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn ensure_database(&self) -> Result<(), EmbeddedError> {
        let psql = self.bin.join("psql");
        let psql = if psql.exists() { psql } else { PathBuf::from("psql") };
        let query = |sql: &str| {
            let mut c = Command::new(&psql);
            c.arg("-h")
                .arg(&self.socket_dir)
                .args(["-U", USER, "-d", "postgres", "-tAc", sql]);
            c
        };
        let exists = self.run("psql", &mut query("SELECT 1 FROM pg_database WHERE datname = 'tolk'"))?;
        if exists.trim() != "1" {
            self.run("CREATE DATABASE", &mut query("CREATE DATABASE tolk"))?;
        }
        Ok(())
    }

    fn command(&self, tool: &str) -> Command {
        let mut c = Command::new(self.bin.join(tool));
        if let Some((uid, gid)) = self.run_as {
            c.uid(uid).gid(gid);
            // initdb and pg_ctl must not start in a directory the user cannot read.
            c.current_dir("/");
        }
        c
    }

    fn chown(&self, path: &Path) -> Result<(), EmbeddedError> {
        if let Some((uid, gid)) = self.run_as {
            std::os::unix::fs::chown(path, Some(uid), Some(gid))
                .map_err(|e| EmbeddedError::Io(path.display().to_string(), e))?;
        }
        Ok(())
    }

    fn run(&self, what: &str, cmd: &mut Command) -> Result<String, EmbeddedError> {
        let out = cmd.output().map_err(|e| EmbeddedError::Io(what.to_string(), e))?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(EmbeddedError::Command {
                what: what.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                )
                .trim()
                .to_string(),
            })
        }
    }
}

fn current_uid() -> Option<u32> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|r| r.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}
