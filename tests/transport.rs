//! Transports over real sockets: IPv6, TCP framing recovery, keep-alives, idle timeout and the
//! connection limit (RFC 3261 §18, RFC 5626 §3.5.1).

mod common;
use common::{Gateway, header, status_of};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

fn options(via_host: &str, transport: &str) -> String {
    format!(
        "OPTIONS sip:+15550100300@tolk SIP/2.0\r\nVia: SIP/2.0/{transport} {via_host};branch=z9hG4bK{};rport\r\n\
From: <sip:probe@{via_host}>;tag=p1\r\nTo: <sip:+15550100300@tolk>\r\nCall-ID: {}@probe\r\nCSeq: 1 OPTIONS\r\n\
Max-Forwards: 70\r\nContent-Length: 0\r\n\r\n",
        fastrand::u64(..),
        fastrand::u64(..)
    )
}

fn read_message(stream: &mut TcpStream, within: Duration) -> Option<String> {
    stream.set_read_timeout(Some(Duration::from_millis(100))).ok()?;
    let deadline = Instant::now() + within;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while Instant::now() < deadline {
        match stream.read(&mut chunk) {
            Ok(0) => return None,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                let text = String::from_utf8_lossy(&buf).into_owned();
                if let Some((head, _)) = text.split_once("\r\n\r\n")
                    && head.starts_with("SIP/2.0")
                {
                    return Some(text);
                }
            }
            Err(_) => continue,
        }
    }
    None
}

#[test]
fn options_over_ipv6_udp_and_tcp() {
    let gw = Gateway::start(&[("TOLK_SIP_LISTEN", "[\"127.0.0.1:{sip_port}\", \"[::1]:{sip_port}\"]")]);
    let v6 = SocketAddr::new("::1".parse().unwrap(), gw.sip.port());
    let udp = UdpSocket::bind("[::1]:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let local = udp.local_addr().unwrap();
    udp.send_to(options(&local.to_string(), "UDP").as_bytes(), v6).unwrap();
    let mut buf = [0u8; 4096];
    let (n, from) = udp.recv_from(&mut buf).expect("an answer over IPv6");
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert_eq!(status_of(&text), Some(200), "{text}");
    assert_eq!(from, v6);
    // RFC 3581: rport filled in with our source port.
    assert!(
        header(&text, "Via")
            .unwrap()
            .contains(&format!("rport={}", local.port())),
        "{text}"
    );

    let mut tcp = TcpStream::connect(v6).unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(options(&local.to_string(), "TCP").as_bytes()).unwrap();
    let text = read_message(&mut tcp, Duration::from_secs(3)).expect("an answer over IPv6 TCP");
    assert_eq!(status_of(&text), Some(200), "{text}");
}

#[test]
fn tcp_recovers_from_garbage_and_answers_the_next_message() {
    let gw = Gateway::start(&[]);
    let mut tcp = TcpStream::connect(gw.sip).unwrap();
    let local = tcp.local_addr().unwrap();
    tcp.write_all(b"\x00\x01\x02 this is not SIP\r\nneither is this\r\n")
        .unwrap();
    tcp.write_all(options(&local.to_string(), "TCP").as_bytes()).unwrap();
    let text = read_message(&mut tcp, Duration::from_secs(3)).expect("answer after garbage");
    assert_eq!(status_of(&text), Some(200), "{text}");
    // A malformed request on the stream is answered 400 and the connection stays usable.
    let bad = options(&local.to_string(), "TCP").replace("CSeq: 1 OPTIONS", "CSeq: 1 INVITE");
    tcp.write_all(bad.as_bytes()).unwrap();
    let text = read_message(&mut tcp, Duration::from_secs(3)).expect("400");
    assert_eq!(status_of(&text), Some(400), "{text}");
    tcp.write_all(options(&local.to_string(), "TCP").as_bytes()).unwrap();
    let text = read_message(&mut tcp, Duration::from_secs(3)).expect("200 again");
    assert_eq!(status_of(&text), Some(200), "{text}");
}

#[test]
fn crlf_ping_gets_a_pong() {
    // RFC 5626 §3.5.1
    let gw = Gateway::start(&[]);
    let mut tcp = TcpStream::connect(gw.sip).unwrap();
    tcp.write_all(b"\r\n\r\n").unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 2];
    tcp.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"\r\n");
}

#[test]
fn idle_tcp_connection_is_closed() {
    let gw = Gateway::start(&[("TOLK_SIP_TCP_IDLE_SECS", "1")]);
    let mut tcp = TcpStream::connect(gw.sip).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let n = tcp.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed by the gateway");
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[test]
fn connections_over_the_limit_are_closed() {
    let gw = Gateway::start(&[("TOLK_SIP_TCP_MAX_CONNECTIONS", "2")]);
    let _a = TcpStream::connect(gw.sip).unwrap();
    let _b = TcpStream::connect(gw.sip).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut c = TcpStream::connect(gw.sip).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(c.read(&mut buf).unwrap_or(0), 0, "third connection closed");
}
