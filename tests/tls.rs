//! SIP over TLS against a real `tolk serve`: the first start's self-signed certificate (key
//! 0600, names localhost, 127.0.0.1 and ::1), requests answered over TLS, a certificate
//! replaced on SIGHUP while a connection made before keeps working, the handshake timeout
//! and the per-address connection cap.

mod common;
use common::Gateway;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::Arc;
use std::time::{Duration, Instant};

type Tls = rustls::StreamOwned<rustls::ClientConnection, TcpStream>;

/// A TLS connection that trusts only `cert` (PEM), to 127.0.0.1.
fn connect(gw: &Gateway, cert: &std::path::Path) -> Tls {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    #[allow(deprecated)]
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let name = ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let tcp = TcpStream::connect(gw.sip_tls).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    rustls::StreamOwned::new(conn, tcp)
}

/// Sends an OPTIONS on `tls` and returns the response's head.
fn options(tls: &mut Tls, n: u32) -> String {
    let local = tls.sock.local_addr().unwrap();
    let req = format!(
        "OPTIONS sip:100@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TLS {local};branch=z9hG4bKtls{n}\r\n\
         From: <sip:t@{local}>;tag={n}\r\nTo: <sip:100@127.0.0.1>\r\nCall-ID: tls-{n}\r\n\
         CSeq: 1 OPTIONS\r\nMax-Forwards: 70\r\nContent-Length: 0\r\n\r\n"
    );
    tls.write_all(req.as_bytes()).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tls.read(&mut buf).expect("a response");
        assert!(n > 0, "closed");
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

#[test]
fn first_start_certificate_answers_over_tls_and_a_reload_keeps_old_connections() {
    let gw = Gateway::start(&[]);
    let dir = gw.data_dir.join("tls");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "the key is the owner's only");
    }
    let mut first = connect(&gw, &cert);
    let ok = options(&mut first, 1);
    assert!(ok.starts_with("SIP/2.0 200"), "{ok}");
    assert!(ok.contains("SIP/2.0/TLS"), "{ok}");

    // A new certificate, SIGHUP: new connections get it, the one up goes on.
    let old_cert = std::fs::read(&cert).unwrap();
    let made = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_string()]).unwrap();
    std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
    std::fs::write(&cert, made.cert.pem()).unwrap();
    gw.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("TLS certificate reloaded") {
        assert!(Instant::now() < deadline, "{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    let ok = options(&mut first, 2);
    assert!(
        ok.starts_with("SIP/2.0 200"),
        "the connection made before the reload: {ok}"
    );
    let mut second = connect(&gw, &cert);
    assert!(options(&mut second, 3).starts_with("SIP/2.0 200"));
    // The old certificate is no longer what new connections see.
    let old_path = gw.data_dir.join("old-cert.pem");
    std::fs::write(&old_path, old_cert).unwrap();
    let mut stale = connect(&gw, &old_path);
    let mut buf = [0u8; 16];
    let _ = stale.write_all(b"\r\n\r\n");
    assert!(
        stale.read(&mut buf).is_err(),
        "the old certificate is not trusted for the new one"
    );

    // A bad file leaves the certificate in use.
    std::fs::write(&cert, "not a certificate").unwrap();
    gw.hup();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !gw.log_text().contains("TLS certificate not reloaded") {
        assert!(Instant::now() < deadline, "{}", gw.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    std::fs::write(&cert, made.cert.pem()).unwrap();
    let mut third = connect(&gw, &cert);
    assert!(options(&mut third, 4).starts_with("SIP/2.0 200"));
}

#[test]
fn a_silent_handshake_times_out_and_one_address_gets_a_few_connections() {
    let gw = Gateway::start(&[(
        "TOLK_SIP_TLS",
        "{ listen = [\"127.0.0.1:{tls_port}\"], handshake_timeout_ms = 500, max_connections_per_address = 2 }",
    )]);
    let cert = gw.data_dir.join("tls").join("cert.pem");
    // A TCP connection that never says hello is closed after the timeout.
    let mut silent = TcpStream::connect(gw.sip_tls).unwrap();
    silent.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    assert_eq!(silent.read(&mut buf).unwrap_or(0), 0, "closed");
    assert!(started.elapsed() < Duration::from_secs(4));
    drop(silent);
    std::thread::sleep(Duration::from_millis(100));
    // Two at once from 127.0.0.1; a third is closed at once.
    let mut a = connect(&gw, &cert);
    let mut b = connect(&gw, &cert);
    assert!(options(&mut a, 1).starts_with("SIP/2.0 200"));
    assert!(options(&mut b, 2).starts_with("SIP/2.0 200"));
    let mut c = connect(&gw, &cert);
    let _ = c.write_all(b"\r\n\r\n");
    assert!(c.read(&mut buf).map(|n| n == 0).unwrap_or(true), "the third is refused");
    assert!(gw.metric("sip_tls_refused_total{reason=\"per_address\"}") >= 1);
    assert!(gw.metric("sip_tls_handshakes_total{outcome=\"timeout\"}") >= 1);
}
