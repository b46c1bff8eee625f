//! What flows and dialplans take from outside: numbers from SIP headers (normalised and
//! classified), `numbers.toml` text (parsed into a plan or rejected with errors), and HTTP
//! answers from clients' endpoints. None of them may panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::{Arc, OnceLock};
use tolk::flow::FlowLibrary;
use tolk::dialplan::Dialplan;
use tolk::flow::engine::Limits;

fuzz_target!(|data: &[u8]| {
    static LIB: OnceLock<Arc<FlowLibrary>> = OnceLock::new();
    let lib = LIB.get_or_init(|| Arc::new(FlowLibrary::empty(Limits::default())));
    let _ = tolk::flow::http::parse_response(data);
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some(n) = tolk::number::normalise(text) {
        assert!(n.starts_with('+'));
        let _ = tolk::number::classify(&n);
    }
    if let Ok(plan) = Dialplan::from_text(Path::new("d"), Path::new("numbers.toml"), text, lib.clone(), &[]) {
        let _ = plan.route(text, Some("t"));
        let _ = plan.route("+18005550100", None);
    }
});
