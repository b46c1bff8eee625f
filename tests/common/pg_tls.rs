//! A private PostgreSQL cluster that takes TCP connections over TLS only (`ssl = on`,
//! `hostssl` in pg_hba.conf, plain TCP rejected), for the test of `sslmode` in
//! `database.url`. Its certificate is a self-signed pair for localhost, 127.0.0.1 and ::1,
//! made by tolk's own first-start code. Stopped (immediate) when dropped.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct TlsPostgres {
    pub port: u16,
    /// The server certificate, which is also its own root (`sslrootcert`).
    pub cert: PathBuf,
    data: PathBuf,
    bin: PathBuf,
    as_postgres: bool,
}

fn server_binaries() -> PathBuf {
    let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .expect("Debian's postgresql package (the test script installs it)")
        .flatten()
        .map(|e| e.path().join("bin"))
        .filter(|b| b.join("pg_ctl").exists())
        .collect();
    versions.sort();
    versions.pop().expect("initdb and pg_ctl")
}

impl TlsPostgres {
    pub fn start() -> TlsPostgres {
        let dir = super::unique_dir("pgtls");
        let data = dir.join("pg");
        // PostgreSQL refuses to run as root: the `postgres` user runs it then.
        let as_postgres = std::fs::read_to_string("/proc/self/status")
            .ok()
            .and_then(|s| {
                s.lines()
                    .find(|l| l.starts_with("Uid:"))
                    .map(|l| l.split_whitespace().nth(1) == Some("0"))
            })
            .unwrap_or(false);
        let pg = TlsPostgres {
            port: super::free_port(),
            cert: data.join("server.crt"),
            data: data.clone(),
            bin: server_binaries(),
            as_postgres,
        };
        std::fs::create_dir_all(&data).unwrap();
        pg.chown(&dir);
        pg.chown(&data);
        pg.run("initdb", |c| {
            c.arg("-D")
                .arg(&data)
                .args(["-U", "tolk", "-A", "trust", "--no-instructions"]);
        });
        let (cert, key) = tolk::sip::transport::tls::cert_files(None, &dir.join("tls")).expect("a self-signed pair");
        std::fs::copy(cert, &pg.cert).unwrap();
        std::fs::copy(key, data.join("server.key")).unwrap();
        for f in ["server.crt", "server.key"] {
            pg.chown(&data.join(f));
        }
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(data.join("server.key"), std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(
            data.join("pg_hba.conf"),
            "local all all trust\nhostssl all all 127.0.0.1/32 trust\nhostnossl all all 127.0.0.1/32 reject\n",
        )
        .unwrap();
        let opts = format!(
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c ssl=on -c max_connections=20 -c shared_buffers=16MB",
            pg.port,
            data.display()
        );
        pg.run("pg_ctl start", |c| {
            c.arg("-D")
                .arg(&data)
                .arg("-l")
                .arg(data.join("postgres.log"))
                .args(["-w", "-t", "60", "-o", &opts, "start"]);
        });
        pg.psql("postgres", "CREATE DATABASE tolk");
        pg
    }

    /// The URL of the `tolk` database over TCP with `params` (`sslmode=...`).
    pub fn url(&self, params: &str) -> String {
        format!("postgres://tolk@127.0.0.1:{}/tolk?{params}", self.port)
    }

    /// Runs SQL over the Unix socket (no TLS needed there); rows as `|`-separated lines.
    pub fn query(&self, sql: &str) -> Vec<String> {
        self.psql("tolk", sql)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }

    fn psql(&self, db: &str, sql: &str) -> String {
        let out = Command::new(self.bin.join("psql"))
            .arg("-h")
            .arg(&self.data)
            .args(["-p", &self.port.to_string(), "-U", "tolk", "-d", db, "-tAc", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Whether a client connecting over TCP with `sslmode` gets in.
    pub fn tcp_client_gets_in(&self, sslmode: &str) -> bool {
        Command::new(self.bin.join("psql"))
            .arg(format!(
                "{}&sslrootcert={}",
                self.url(&format!("sslmode={sslmode}")),
                self.cert.display()
            ))
            .args(["-tAc", "SELECT 1"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    fn chown(&self, path: &Path) {
        if self.as_postgres {
            let ok = Command::new("chown")
                .arg("postgres:postgres")
                .arg(path)
                .status()
                .map(|s| s.success());
            assert_eq!(ok.ok(), Some(true), "chown {}", path.display());
        }
    }

    /// A server tool, run as `postgres` when we are root.
    fn tool(&self, name: &str) -> Command {
        let mut c = if self.as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(self.bin.join(name));
            c
        } else {
            Command::new(self.bin.join(name))
        };
        c.current_dir("/");
        c
    }

    fn run(&self, what: &str, args: impl FnOnce(&mut Command)) {
        let mut c = self.tool(what.split(' ').next().unwrap_or(what));
        args(&mut c);
        let out = c.output().expect(what);
        assert!(
            out.status.success(),
            "{what}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for TlsPostgres {
    fn drop(&mut self) {
        let _ = self
            .tool("pg_ctl")
            .arg("-D")
            .arg(&self.data)
            .args(["-m", "immediate", "-w", "stop"])
            .output();
        if let Some(dir) = self.data.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}
