//! Digest answers from peers (RFC 7616 §3.4 `Authorization`): reading one never panics, and
//! checking whatever was read against a challenge we made never panics nor accepts.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::time::Instant;
use tolk::sip::auth::{Algorithm, Authenticator, Verdict, parse_authorization};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(answer) = parse_authorization(text) else { return };
    let mut auth = Authenticator::new("tolk", [3; 32]);
    let now = Instant::now();
    let _ = auth.challenges(now, 1, false, &[Algorithm::Sha256, Algorithm::Md5]);
    // Without the password nobody can be let in; with a guessed one, a fuzzer cannot forge
    // the seal of a nonce.
    let verdict = auth.check(now, "INVITE", &answer, None, &[Algorithm::Sha256, Algorithm::Md5]);
    assert_eq!(verdict, Verdict::Refused);
    let verdict = auth.check(now, "INVITE", &answer, Some("secret-password"), &[Algorithm::Md5]);
    assert_ne!(verdict, Verdict::Accepted);
});
