//! One `a=crypto:` value (RFC 4568 §9.1) from a peer: parsing never panics, what parses has
//! a key of its suite's length, and our own line for it parses back to the same attribute.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tolk::sip::sdes::{LocalSrtp, KeyMaterial, choose, parse_crypto, write_answer};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Some(attr) = parse_crypto(text) else { return };
    assert_eq!(attr.key.key_salt().len(), attr.suite.key_salt_len());
    let local = LocalSrtp {
        required: true,
        material: KeyMaterial::from_bytes([3; 46]),
    };
    let keys = choose(std::slice::from_ref(&attr), &local).expect("a usable attribute is chosen");
    let mut line = String::new();
    write_answer(&mut line, &keys);
    let value = line.trim_end().strip_prefix("a=crypto:").expect("one crypto line");
    let back = parse_crypto(value).expect("our line parses");
    assert_eq!((back.tag, back.suite), (attr.tag, attr.suite));
    assert_eq!(back.key, keys.ours);
});
