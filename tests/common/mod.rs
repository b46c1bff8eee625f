//! Test helpers: a real `tolk serve` process on loopback, SIPp, and a small scripted UAC.
#![allow(dead_code)]

pub mod baresip;
pub mod pg_tls;
mod ports;
pub mod webdriver;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `tolk serve` child process on loopback ports of its own.
pub struct Gateway {
    child: Option<Child>,
    pub sip: SocketAddr,
    /// SIP over TLS.
    pub sip_tls: SocketAddr,
    pub admin: SocketAddr,
    pub data_dir: PathBuf,
    pub log: PathBuf,
    /// Leave the data directory on drop (a test restarts a gateway on it).
    pub keep_data: bool,
}

pub use ports::{free_port, free_port_pair, rtp_block};

pub fn unique_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tolk-test-{tag}-{}-{}", std::process::id(), fastrand::u64(..)));
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// The PostgreSQL server the tests use (the test script provides it).
/// A dialplan directory of its own: the shipped `numbers.toml` routes and the given flows
/// (`name`, script), which replace shipped flows of the same name.
pub fn dialplan_with(flows: &[(&str, &str)]) -> PathBuf {
    let shipped = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dialplans");
    let dir = unique_dir("dialplan");
    std::fs::create_dir_all(dir.join("flows")).unwrap();
    std::fs::copy(shipped.join("numbers.toml"), dir.join("numbers.toml")).unwrap();
    std::fs::copy(shipped.join("rooms.toml"), dir.join("rooms.toml")).unwrap();
    for entry in std::fs::read_dir(shipped.join("flows")).unwrap().flatten() {
        std::fs::copy(entry.path(), dir.join("flows").join(entry.file_name())).unwrap();
    }
    for (name, script) in flows {
        std::fs::write(dir.join("flows").join(format!("{name}.rhai")), script).unwrap();
    }
    dir
}

pub fn pg_base() -> String {
    std::env::var("TOLK_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Creates database `name` on the test server if it does not exist; returns its URL.
pub fn ensure_database(name: &str) -> String {
    let base = pg_base();
    let out = Command::new("psql")
        .arg(format!("{base}/postgres"))
        .args(["-tAc", &format!("SELECT 1 FROM pg_database WHERE datname = '{name}'")])
        .output()
        .expect("psql (postgresql-client) is installed");
    assert!(
        out.status.success(),
        "the test PostgreSQL at {base} is not reachable: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    if String::from_utf8_lossy(&out.stdout).trim() != "1" {
        // Parallel tests may race to create it: "already exists" is fine.
        let _ = Command::new("psql")
            .arg(format!("{base}/postgres"))
            .args(["-c", &format!("CREATE DATABASE {name}")])
            .output();
    }
    format!("{base}/{name}")
}

/// A fresh database for one test, dropped when the guard goes.
pub struct TestDb {
    pub name: String,
    pub url: String,
}

impl TestDb {
    pub fn new(tag: &str) -> TestDb {
        let name = format!("tolk_t_{tag}_{}", fastrand::u32(..));
        let url = ensure_database(&name);
        TestDb { name, url }
    }

    /// Polls `sql` until it returns `want` (or `within` runs out); returns the last answer.
    pub fn wait_for(&self, sql: &str, want: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let got = self.query(sql).join("\n");
            if got == want || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// Runs SQL and returns the rows as `|`-separated text lines.
    pub fn query(&self, sql: &str) -> Vec<String> {
        let out = Command::new("psql")
            .arg(&self.url)
            .args(["-tA", "-c", sql])
            .output()
            .expect("psql");
        assert!(out.status.success(), "{sql}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_string)
            .collect()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", pg_base()))
            .args(["-c", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

impl Gateway {
    /// Starts the gateway with `env` overrides on top of loopback test defaults; `{sip_port}`
    /// and `{tls_port}` in a value stand for the SIP and SIP-over-TLS ports chosen for it.
    pub fn start(env: &[(&str, &str)]) -> Gateway {
        Self::start_in(unique_dir("gw"), env)
    }

    /// Starts the gateway on an existing data directory (a restart). A gateway that exits
    /// before it is ready because a port it was given got taken is started again on fresh
    /// ports; any other early exit fails the test with its log and stderr.
    pub fn start_in(data_dir: PathBuf, env: &[(&str, &str)]) -> Gateway {
        for _attempt in 0..3 {
            match Self::try_start(&data_dir, env) {
                Ok(gw) => return gw,
                Err(why) if why.contains("cannot bind") || why.contains("in use") => {
                    eprintln!("tolk could not bind a test port, retrying on fresh ports:\n{why}");
                }
                Err(why) => panic!("tolk did not become ready:\n{why}"),
            }
        }
        panic!("tolk could not bind its ports three times running");
    }

    fn try_start(data_dir: &std::path::Path, env: &[(&str, &str)]) -> Result<Gateway, String> {
        let sip_port = free_port();
        let admin_port = free_port();
        let tls_port = free_port();
        let log = data_dir.join(format!("tolk-{sip_port}.log"));
        let stderr = data_dir.join(format!("tolk-{sip_port}.stderr"));
        let rtp_base = rtp_block(400);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_tolk"));
        cmd.arg("serve")
            .current_dir(data_dir)
            .env("TOLK_SIP_LISTEN", format!("[\"127.0.0.1:{sip_port}\"]"))
            .env("TOLK_ADMIN_LISTEN", format!("127.0.0.1:{admin_port}"))
            .env("TOLK_SIP_TLS", format!("{{ listen = [\"127.0.0.1:{tls_port}\"] }}"))
            .env("TOLK_RTP_PORTS", format!("{}-{}", rtp_base, rtp_base + 399))
            .env("TOLK_RTP_BIND", "127.0.0.1")
            .env("TOLK_DATA_DIR", data_dir)
            .env(
                "TOLK_SOUNDS_DIR",
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sounds"),
            )
            .env("TOLK_LOG_LEVEL", "info")
            .env(
                "TOLK_DIALPLAN_DIR",
                PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("dialplans"),
            )
            // CDRs go to a database shared by the tests that do not look at them.
            .env("TOLK_DATABASE_URL", ensure_database("tolk_it"))
            .stdout(Stdio::from(std::fs::File::create(&log).expect("log file")))
            .stderr(Stdio::from(std::fs::File::create(&stderr).expect("stderr file")));
        for (k, v) in env {
            cmd.env(
                k,
                v.replace("{sip_port}", &sip_port.to_string())
                    .replace("{tls_port}", &tls_port.to_string()),
            );
        }
        let child = cmd.spawn().expect("spawn tolk");
        let mut gw = Gateway {
            child: Some(child),
            sip: SocketAddr::from(([127, 0, 0, 1], sip_port)),
            sip_tls: SocketAddr::from(([127, 0, 0, 1], tls_port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            data_dir: data_dir.to_path_buf(),
            log,
            keep_data: false,
        };
        let why = |gw: &Gateway| {
            format!(
                "log:\n{}\nstderr:\n{}",
                gw.log_text(),
                std::fs::read_to_string(&stderr).unwrap_or_default()
            )
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if http_get(gw.admin, "/healthz").is_some() {
                return Ok(gw);
            }
            let exited = gw.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                gw.child = None;
                gw.keep_data = true;
                return Err(format!("exited with {status}; {}", why(&gw)));
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!("not ready after 30 s; {}", why(&gw)))
    }

    /// The gateway's process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of the first `/metrics` line starting with `name` (labels included, as
    /// `calls_total{outcome="answered"}`); 0 when absent.
    pub fn metric(&self, name: &str) -> u64 {
        self.metrics()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .map(|v| v as u64)
            .unwrap_or(0)
    }

    pub fn metrics(&self) -> String {
        http_get(self.admin, "/metrics").unwrap_or_default()
    }

    /// Kills the process with SIGKILL (a crash) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Sends SIGTERM (graceful shutdown).
    /// Sends SIGHUP (reload the dialplan).
    pub fn hup(&self) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args(["-HUP", &c.id().to_string()]).status();
        }
    }

    pub fn terminate(&self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill").arg("-TERM").arg(child.id().to_string()).status();
        }
    }

    /// Waits for the process to exit; returns its status code.
    pub fn wait_exit(&mut self, within: Duration) -> Option<i32> {
        let child = self.child.as_mut()?;
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return status.code();
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !self.keep_data {
            let _ = std::fs::remove_dir_all(&self.data_dir);
        }
    }
}

/// A plain HTTP/1.1 GET; the body on 200.
pub fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    if !out.starts_with("HTTP/1.1 200") {
        return None;
    }
    out.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// An HTTP/1.1 request with an optional bearer token and JSON body: (status, body).
pub fn http_request(addr: SocketAddr, method: &str, path: &str, token: Option<&str>, body: &str) -> (u16, String) {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).expect("admin listener");
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    let status = out.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// The SIPp binary; the test fails (it is not skipped) when SIPp is missing.
pub fn sipp() -> PathBuf {
    for dir in ["/usr/bin", "/usr/local/bin"] {
        let p = PathBuf::from(dir).join("sipp");
        if p.exists() {
            return p;
        }
    }
    panic!("SIPp is not installed: run scripts/test.sh, which installs the sip-tester package");
}

/// The outcome of a SIPp run.
pub struct SippRun {
    pub success: bool,
    pub successful_calls: u64,
    pub failed_calls: u64,
    pub output: String,
}

/// Runs a scenario from `sipp-scenarios/` against the gateway.
pub fn run_sipp(gw: &Gateway, scenario: &str, args: &[&str]) -> SippRun {
    run_sipp_at(gw.sip, scenario, args)
}

/// Runs a scenario against a SIP address (usable from another thread).
pub fn run_sipp_at(target: SocketAddr, scenario: &str, args: &[&str]) -> SippRun {
    let dir = unique_dir("sipp");
    let scenario_path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("sipp-scenarios")
        .join(scenario);
    let local_port = free_port().to_string();
    // SIPp binds audio RTP and RTCP, and video one pair up.
    let media_port = rtp_block(4).to_string();
    // The echo number unless the caller gives `-s`.
    let service: &[&str] = if args.contains(&"-s") {
        &[]
    } else {
        &["-s", "+15550100300"]
    };
    let output = Command::new(sipp())
        .current_dir(&dir)
        .arg("-sf")
        .arg(&scenario_path)
        .args(service)
        // Loopback 127.0.0.1 unless the test picks another source address (`-i`).
        .args(if args.contains(&"-i") {
            &[][..]
        } else {
            &["-i", "127.0.0.1"][..]
        })
        .args(["-p", &local_port, "-mp", &media_port])
        .args(["-timeout", "90", "-timeout_error", "-nostdin", "-trace_err"])
        .args(args)
        .arg(target.to_string())
        .output()
        .expect("run sipp");
    let mut text = String::from_utf8_lossy(&output.stdout).into_owned();
    text.push_str(&String::from_utf8_lossy(&output.stderr));
    for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
        if entry.file_name().to_string_lossy().ends_with("errors.log") {
            text.push_str("\n--- SIPp errors.log ---\n");
            text.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let _ = std::fs::remove_dir_all(&dir);
    let count = |label: &str| -> u64 {
        text.lines()
            .filter(|l| l.trim_start().starts_with(label))
            .filter_map(|l| l.split('|').nth(2))
            .filter_map(|v| v.trim().parse().ok())
            .next_back()
            .unwrap_or(0)
    };
    SippRun {
        success: output.status.success(),
        successful_calls: count("Successful call"),
        failed_calls: count("Failed call"),
        output: text,
    }
}

/// A scripted SIP user agent client over UDP for tests that look inside messages.
pub struct Uac {
    pub sock: UdpSocket,
    pub gw: SocketAddr,
    pub call_id: String,
    pub from_tag: String,
    pub cseq: u32,
    pub to_tag: Option<String>,
    pub number: String,
    /// The caller's number in From.
    pub caller: String,
}

impl Uac {
    pub fn new(gw: SocketAddr, number: &str) -> Uac {
        Uac::new_at(gw, number, "127.0.0.1")
    }

    /// A UAC on another loopback address (`127.0.0.5`): another source to the gateway.
    pub fn new_at(gw: SocketAddr, number: &str, ip: &str) -> Uac {
        let sock = UdpSocket::bind((ip, 0)).expect("bind");
        sock.set_read_timeout(Some(Duration::from_millis(200)))
            .expect("timeout");
        Uac {
            sock,
            gw,
            call_id: format!("{}@test", fastrand::u64(..)),
            from_tag: format!("{}", fastrand::u32(..)),
            cseq: 0,
            to_tag: None,
            number: number.to_string(),
            caller: "+15551234567".into(),
        }
    }

    /// The same, calling from `caller`.
    pub fn from(gw: SocketAddr, number: &str, caller: &str) -> Uac {
        let mut u = Uac::new(gw, number);
        u.caller = caller.to_string();
        u
    }

    pub fn local(&self) -> SocketAddr {
        self.sock.local_addr().expect("addr")
    }

    /// Builds a request in this UAC's dialog.
    pub fn request(&mut self, method: &str, extra_headers: &str, body: &str) -> String {
        if method != "ACK" && method != "CANCEL" {
            self.cseq += 1;
        }
        let local = self.local();
        let to_tag = self.to_tag.as_ref().map(|t| format!(";tag={t}")).unwrap_or_default();
        let ctype = if body.is_empty() {
            String::new()
        } else {
            "Content-Type: application/sdp\r\n".to_string()
        };
        format!(
            "{method} sip:{num}@{gw} SIP/2.0\r\nVia: SIP/2.0/UDP {local};branch=z9hG4bK{b};rport\r\n\
From: <sip:{caller}@{local}>;tag={ft}\r\nTo: <sip:{num}@{gw}>{to_tag}\r\nCall-ID: {cid}\r\n\
CSeq: {cseq} {method}\r\nContact: <sip:uac@{local}>\r\nMax-Forwards: 70\r\n{extra_headers}{ctype}Content-Length: {len}\r\n\r\n{body}",
            num = self.number,
            caller = self.caller,
            gw = self.gw,
            b = fastrand::u64(..),
            ft = self.from_tag,
            cid = self.call_id,
            cseq = self.cseq,
            len = body.len(),
        )
    }

    pub fn send(&self, text: &str) {
        self.sock.send_to(text.as_bytes(), self.gw).expect("send");
    }

    /// The next message within `within`, raw text.
    pub fn recv(&self, within: Duration) -> Option<String> {
        let deadline = Instant::now() + within;
        let mut buf = vec![0u8; 65535];
        while Instant::now() < deadline {
            if let Ok((n, _)) = self.sock.recv_from(&mut buf) {
                return Some(String::from_utf8_lossy(&buf[..n]).into_owned());
            }
        }
        None
    }

    /// Answers a request from the gateway (a BYE) with 200 OK.
    pub fn respond_ok(&self, req: &str) {
        let ok = format!(
            "SIP/2.0 200 OK\r\nVia: {}\r\nFrom: {}\r\nTo: {}\r\nCall-ID: {}\r\nCSeq: {}\r\nContent-Length: 0\r\n\r\n",
            header(req, "Via").unwrap_or_default(),
            header(req, "From").unwrap_or_default(),
            header(req, "To").unwrap_or_default(),
            header(req, "Call-ID").unwrap_or_default(),
            header(req, "CSeq").unwrap_or_default()
        );
        self.send(&ok);
    }

    /// Waits for a final response (skipping provisionals), recording the To tag.
    pub fn final_response(&mut self, within: Duration) -> Option<(u16, String)> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            let Some(msg) = self.recv(deadline - Instant::now()) else {
                break;
            };
            let Some(code) = status_of(&msg) else { continue };
            if code >= 200 {
                if let Some(tag) = header(&msg, "To").and_then(|t| {
                    t.split(";tag=")
                        .nth(1)
                        .map(|s| s.split(';').next().unwrap_or(s).to_string())
                }) {
                    self.to_tag = Some(tag);
                }
                return Some((code, msg));
            }
        }
        None
    }
}

pub fn status_of(msg: &str) -> Option<u16> {
    msg.strip_prefix("SIP/2.0 ")?.get(..3)?.parse().ok()
}

/// The first value of a header (full or compact name given explicitly).
pub fn header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\r\n\r\n").next()?;
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        n.trim().eq_ignore_ascii_case(name).then(|| v.trim().to_string())
    })
}

pub fn body(msg: &str) -> &str {
    msg.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("")
}

/// An SDP offer with our RTP port.
pub fn sdp_offer(rtp: SocketAddr, pts: &str, extra: &str) -> String {
    let mut maps = String::new();
    for pt in pts.split(' ') {
        match pt {
            "0" => maps.push_str("a=rtpmap:0 PCMU/8000\r\n"),
            "8" => maps.push_str("a=rtpmap:8 PCMA/8000\r\n"),
            "101" => maps.push_str("a=rtpmap:101 telephone-event/8000\r\n"),
            _ => {}
        }
    }
    format!(
        "v=0\r\no=test 1 {v} IN IP4 {ip}\r\ns=-\r\nc=IN IP4 {ip}\r\nt=0 0\r\nm=audio {port} RTP/AVP {pts}\r\n{maps}{extra}",
        v = fastrand::u32(1..1000),
        ip = rtp.ip(),
        port = rtp.port()
    )
}

/// The RTP port in an SDP answer's audio m-line.
pub fn sdp_audio_port(sdp: &str) -> Option<u16> {
    sdp.lines()
        .find_map(|l| l.strip_prefix("m=audio ")?.split(' ').next()?.parse().ok())
}

/// Asserts that `file` holds personal data the way tolk keeps it: the file 0600 (the owner
/// reads and writes), its folder 0700 (docs/PRIVACY.md).
pub fn assert_private(file: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &std::path::Path| {
        std::fs::metadata(p)
            .map(|m| m.permissions().mode() & 0o777)
            .unwrap_or(0)
    };
    let dir = file.parent().expect("a file in a folder");
    assert_eq!(
        (mode(file), mode(dir)),
        (0o600, 0o700),
        "{} must be 0600 in a 0700 folder",
        file.display()
    );
}

/// Runs `tolk check-config --config FILE`: whether it passed, and stdout then stderr.
pub fn check_config(file: &std::path::Path) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tolk"))
        .args(["check-config", "--config"])
        .arg(file)
        .output()
        .expect("tolk check-config");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Keys `digits` on `uac`'s call by SIP INFO (application/dtmf-relay), each acknowledged
/// (at most 3 s each).
pub fn key_by_info(uac: &mut Uac, digits: &str) {
    for d in digits.chars() {
        let body = format!("Signal={d}\r\nDuration=160\r\n");
        let info = uac.request("INFO", "", "").replace(
            "Content-Length: 0\r\n\r\n",
            &format!(
                "Content-Type: application/dtmf-relay\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            ),
        );
        uac.send(&info);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            let Some(msg) = uac.recv(Duration::from_millis(500)) else {
                continue;
            };
            if status_of(&msg) == Some(200) && msg.contains(" INFO\r\n") {
                break;
            }
        }
    }
}
