//! Transfer (RFC 3515): our REFER, and the NOTIFYs that report its outcome.

use super::*;

impl UasCore {
    /// RFC 3515 §2.4.4-2.4.5: the transferee reports how the transfer goes in NOTIFYs whose
    /// body is a `message/sipfrag` status line (RFC 3420); a final status ends the transfer.
    pub(super) fn on_notify(&mut self, now: Instant, req: Request, key: ServerKey, peer: Peer, cref: CallRef) {
        let event = req.header(&Name::EVENT).unwrap_or("").trim().to_ascii_lowercase();
        if !event.starts_with("refer") {
            // RFC 6665 §8.2.1: an event package we do not know.
            self.respond(now, &req, key, peer, 489, Vec::new(), None);
            return;
        }
        self.respond(now, &req, key, peer, 200, Vec::new(), None);
        let status = std::str::from_utf8(&req.body)
            .ok()
            .and_then(|b| b.trim_start().strip_prefix("SIP/2.0 "))
            .and_then(|rest| rest.get(..3))
            .and_then(|code| code.parse::<u16>().ok())
            .filter(|c| (100..=699).contains(c));
        if let Some(status) = status.filter(|s| *s >= 200) {
            self.transfer_result(cref, status);
        }
    }

    /// Reports a transfer's outcome once (a late NOTIFY after a timeout is not reported).
    pub(super) fn transfer_result(&mut self, call: CallRef, status: u16) {
        if self.referring.remove(&call) {
            self.events.push_back(UasEvent::TransferResult { call, status });
        }
    }

    /// Transfers an answered call (RFC 3515): sends REFER with `Refer-To: <target>`, where
    /// `target` is a SIP or tel URI, or a number/user sent back to the peer as
    /// `sip:user@peer`. The outcome arrives as [`UasEvent::TransferResult`]; the call stays up
    /// (the transferor hangs up after a success, RFC 5589 §6.1).
    pub fn refer(&mut self, cref: CallRef, target: &str, now: Instant) -> Result<(), CommandError> {
        let cfg = self.cfg.clone();
        let referring = self.referring.contains(&cref);
        let call = self.calls.get_mut(&cref).ok_or(CommandError::NoSuchCall)?;
        if call.state != CallState::Confirmed || referring {
            return Err(CommandError::WrongState);
        }
        if target.is_empty() || target.contains(['<', '>', '\r', '\n', ' ', '"']) {
            return Err(CommandError::WrongState);
        }
        let uri = if target.starts_with("sip:") || target.starts_with("sips:") || target.starts_with("tel:") {
            target.to_string()
        } else {
            format!("sip:{target}@{}", call.peer.remote)
        };
        let mut req = call.new_request(Method::Refer, &cfg);
        req.headers.insert(Name::REFER_TO, format!("<{uri}>"));
        req.headers.insert(Name::CONTACT, call.contact());
        let peer = call.peer;
        self.referring.insert(cref);
        self.start_non_invite(req, peer, cref, Purpose::Refer, now);
        Ok(())
    }
}
