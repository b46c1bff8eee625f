//! CDRs into a PostgreSQL that takes TCP over TLS only (issue 14: "PostgreSQL connections can
//! use TLS, `sslmode` in the URL"). The server is a private cluster with `ssl = on` whose
//! pg_hba.conf rejects plain TCP, so a CDR that lands there came over TLS; `pg_stat_ssl`
//! says so too. With `sslmode=verify-full` the gateway checks the server's certificate
//! against `sslrootcert`.

mod common;
use common::pg_tls::TlsPostgres;
use common::{Gateway, run_sipp};
use std::time::{Duration, Instant};

#[test]
fn cdrs_reach_a_tls_only_postgresql_with_a_verified_certificate() {
    let pg = TlsPostgres::start();
    assert!(!pg.tcp_client_gets_in("disable"), "the server must refuse plain TCP");
    assert!(
        pg.tcp_client_gets_in("verify-full"),
        "and take TLS with its certificate"
    );
    let url = pg.url(&format!("sslmode=verify-full&sslrootcert={}", pg.cert.display()));
    let gw = Gateway::start(&[("TOLK_DATABASE_URL", url.as_str())]);
    let run = run_sipp(&gw, "basic_call.xml", &["-m", "2", "-r", "5"]);
    assert_eq!(run.successful_calls, 2, "{}", run.output);
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut rows = Vec::new();
    while Instant::now() < deadline {
        rows = pg.query("SELECT count(*) FROM calls WHERE disposition = 'answered'");
        if rows == ["2"] {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(rows, ["2"], "both CDRs over TLS; log:\n{}", gw.log_text());
    let tls_sessions = pg.query(
        "SELECT count(*) FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE ssl AND datname = 'tolk' AND client_addr IS NOT NULL",
    );
    assert_ne!(tls_sessions, ["0"], "the gateway's sessions use TLS");
}

#[test]
fn a_certificate_that_does_not_verify_is_a_clear_error_and_calls_still_work() {
    let pg = TlsPostgres::start();
    // A root that did not sign the server's certificate: another self-signed pair.
    let other = common::unique_dir("other-root");
    let (wrong_root, _) = tolk::sip::transport::tls::cert_files(None, &other).unwrap();
    let url = pg.url(&format!("sslmode=verify-full&sslrootcert={}", wrong_root.display()));
    let gw = Gateway::start(&[("TOLK_DATABASE_URL", url.as_str())]);
    // Calls go on (the CDR journal keeps them) while the database cannot be reached.
    let run = run_sipp(&gw, "basic_call.xml", &["-m", "1", "-r", "5"]);
    assert_eq!(run.successful_calls, 1, "{}", run.output);
    let deadline = Instant::now() + Duration::from_secs(15);
    let complaint = |log: &str| log.to_lowercase().contains("certificate");
    while !complaint(&gw.log_text()) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
    }
    let log = gw.log_text();
    assert!(complaint(&log), "the log names the certificate problem:\n{log}");
    if let Some(line) = log.lines().find(|l| complaint(l)) {
        eprintln!("{line}");
    }
    assert_eq!(
        pg.query("SELECT count(*) FROM pg_tables WHERE tablename = 'calls'"),
        ["0"]
    );
}
