//! Call accounting: turns a call's life (offered, ringing, answered, ended, media summary)
//! into CDR writes. A call is written when it is accepted (ringing or answered), so a crash
//! mid-call still leaves a record, and again when it ends; calls refused at once are written
//! once. Nothing here waits on the database: the sink appends to the local journal.

use crate::cdr::RecordPolicy;
use crate::cdr::model::{CallRecord, Disposition, HangupBy, JournalEntry, Micros, Quality, q850_for_status};
use crate::cdr::writer::CdrSink;
use crate::media::stream::StreamSummary;
use crate::sip::dialog::{CallRef, EndReason, IncomingCall};
use std::collections::HashMap;

/// How long an ended call waits for its media leg's quality summary before it is written
/// without one.
const SUMMARY_WAIT_MICROS: Micros = 2_000_000;

/// The CDRs of the calls in progress.
pub struct Accounting {
    sink: CdrSink,
    policy: RecordPolicy,
    calls: HashMap<CallRef, CallState>,
}

struct CallState {
    record: CallRecord,
    /// The caller's E.164 number, in memory only, for a retention class that keeps it.
    caller_e164: Option<String>,
    /// The media leg ran out of RTP: the hangup that follows is a failure.
    rtp_timeout: bool,
    /// Ended, waiting for the leg's summary until this time.
    awaiting_summary: Option<Micros>,
}

impl Accounting {
    pub fn new(sink: CdrSink, policy: RecordPolicy) -> Self {
        Accounting {
            sink,
            policy,
            calls: HashMap::new(),
        }
    }

    /// A new call was offered. `dialled` is the normalised number when there is one; `route`
    /// is what the dialplan made of it.
    pub fn offered(
        &mut self,
        inc: &IncomingCall,
        dialled: Option<&str>,
        route: Option<&crate::dialplan::RouteMatch>,
        now: Micros,
    ) {
        let dialled = dialled.or(inc.dialled.as_deref());
        let caller_e164 = inc
            .caller
            .as_deref()
            .filter(|_| !inc.privacy_requested)
            .and_then(crate::number::normalise);
        let tenant = route.and_then(|r| r.tenant.as_deref());
        let mut record = self
            .policy
            .inbound(dialled, caller_e164.as_deref(), tenant, &inc.sip_call_id, now);
        record.trunk = inc.trunk.as_ref().map(|t| t.name.to_string());
        if let Some(route) = route {
            record.dialled_kind = route.kind;
            if let crate::dialplan::Target::Flow(f) = &route.target {
                record.flow = Some(f.clone());
            }
            if !route.tags.is_empty() {
                record.tags = serde_json::json!(route.tags);
            }
            if let Some(class) = &route.retention
                && !self.policy.apply_class(&mut record, class, caller_e164.as_deref())
            {
                tracing::warn!(
                    class,
                    "the dialplan names an unknown retention class; the default applies"
                );
            }
        }
        self.calls.insert(
            inc.call,
            CallState {
                record,
                caller_e164,
                rtp_timeout: false,
                awaiting_summary: None,
            },
        );
    }

    /// Changes a call's record in place (flows: tags, consent, room, role).
    pub fn annotate(&mut self, call: CallRef, f: impl FnOnce(&mut CallRecord)) {
        if let Some(state) = self.calls.get_mut(&call) {
            f(&mut state.record);
        }
    }

    /// A timeline entry for the call (joined a room, opted out...), journalled at once.
    pub fn event(&mut self, call: CallRef, kind: crate::cdr::model::CallEventKind) {
        if let Some(state) = self.calls.get(&call) {
            let event = crate::cdr::model::CallEvent::new(state.record.id, crate::clock::now_micros(), &kind);
            self.sink.write(JournalEntry::Event(event));
        }
    }

    /// Journals a row that is not a call's own (a room session, a recording): written to
    /// PostgreSQL by the CDR writer, replayed after outages and crashes, applied once.
    pub fn journal(&self, entry: JournalEntry) {
        self.sink.write(entry);
    }

    /// Puts the call under another retention class; false when the class is unknown.
    pub fn set_retention(&mut self, call: CallRef, class: &str) -> bool {
        let policy = &self.policy;
        match self.calls.get_mut(&call) {
            Some(state) => policy.apply_class(&mut state.record, class, state.caller_e164.as_deref()),
            None => false,
        }
    }

    /// The call's record (id, class, expiry, consent...), for what is filed alongside it.
    pub fn record(&self, call: CallRef) -> Option<&CallRecord> {
        self.calls.get(&call).map(|s| &s.record)
    }

    /// The retention class a record gets when nothing names one (`cdr.default_retention`).
    pub fn default_retention_class(&self) -> &str {
        &self.policy.default_class
    }

    /// The caller's pseudonym (for the opt-out registry); `None` for anonymous callers.
    pub fn caller_pseudonym(&self, call: CallRef) -> Option<String> {
        self.calls.get(&call).and_then(|s| s.record.caller.pseudonym.clone())
    }

    /// The caller as a flow may see them.
    pub fn caller_view(&self, call: CallRef) -> Option<(String, String, bool)> {
        self.calls.get(&call).map(|s| {
            let c = &s.record.caller;
            (
                c.masked.clone().unwrap_or_else(|| "anonymous".into()),
                c.pseudonym.clone().unwrap_or_default(),
                c.anonymous,
            )
        })
    }

    fn write(&mut self, call: CallRef) {
        if let Some(state) = self.calls.get_mut(&call) {
            state.record.revision += 1;
            self.sink.write(JournalEntry::Call(Box::new(state.record.clone())));
        }
    }

    /// The call rings (accepted, not yet answered): first write.
    pub fn ringing(&mut self, call: CallRef) {
        self.write(call);
    }

    /// The call was answered with `codec`.
    pub fn answered(&mut self, call: CallRef, codec: Option<&str>, now: Micros) {
        if let Some(state) = self.calls.get_mut(&call) {
            state.record.answered_at = Some(now);
            state.record.codec = codec.map(str::to_string);
            state.record.sip_status = Some(200);
        }
        self.write(call);
    }

    /// The leg reported no RTP; the hangup that follows is a media failure.
    pub fn rtp_timed_out(&mut self, call: CallRef) {
        if let Some(state) = self.calls.get_mut(&call) {
            state.rtp_timeout = true;
        }
    }

    /// The call ended. With a media leg, the record waits (briefly) for its quality summary.
    pub fn ended(&mut self, call: CallRef, reason: EndReason, had_leg: bool, now: Micros) {
        let Some(state) = self.calls.get_mut(&call) else { return };
        let r = &mut state.record;
        r.ended_at = Some(now);
        let answered = r.answered_at.is_some();
        let (disposition, status, by) = match reason {
            EndReason::RemoteBye => (Disposition::Answered, 200, HangupBy::Caller),
            EndReason::LocalBye if state.rtp_timeout => (Disposition::Failed, 200, HangupBy::Gateway),
            EndReason::LocalBye | EndReason::TooLong => (Disposition::Answered, 200, HangupBy::Gateway),
            EndReason::Cancelled => (Disposition::Abandoned, 487, HangupBy::Caller),
            EndReason::Rejected(s) => (Disposition::Rejected, s, HangupBy::Gateway),
            EndReason::NoAck | EndReason::SessionExpired | EndReason::DialogLost => {
                (Disposition::Failed, if answered { 200 } else { 408 }, HangupBy::Gateway)
            }
        };
        r.disposition = if answered || matches!(disposition, Disposition::Rejected | Disposition::Abandoned) {
            disposition
        } else {
            Disposition::Failed
        };
        r.sip_status = Some(status as i16);
        // A normal clearing after answer; otherwise the cause of the failure or refusal.
        r.q850_cause = Some(match reason {
            EndReason::NoAck | EndReason::SessionExpired => 102,
            EndReason::DialogLost => 41,
            _ if state.rtp_timeout => 41,
            _ => q850_for_status(status),
        });
        r.hangup_by = Some(by);
        if had_leg {
            // Written now, complete but for its quality: the BYE's 200 is already on the wire,
            // so a crash before the leg's summary must not leave the call in progress (to be
            // closed as interrupted). The summary follows as a later revision.
            state.awaiting_summary = Some(now + SUMMARY_WAIT_MICROS);
            self.write(call);
        } else {
            self.finish(call);
        }
    }

    /// The media leg's summary: the call's quality; the record is complete.
    pub fn summary(&mut self, call: CallRef, s: &StreamSummary) {
        let Some(state) = self.calls.get_mut(&call) else { return };
        state.record.quality = Some(Quality {
            packets_received: s.packets_received,
            packets_lost: s.packets_lost,
            jitter_ms: s.jitter_ms,
            mos: (s.packets_received > 0).then_some(s.mos),
            rtt_ms: s.rtt_ms,
        });
        if state.awaiting_summary.is_some() {
            self.finish(call);
        }
    }

    /// Forgets ended calls whose summary did not come in time (their ended revision stands).
    pub fn flush_overdue(&mut self, now: Micros) {
        self.calls.retain(|_, s| s.awaiting_summary.is_none_or(|t| t > now));
    }

    /// Forgets every ended call still waiting for its summary (shutdown): each was written
    /// when it ended.
    pub fn flush_all(&mut self) {
        self.calls.retain(|_, s| s.awaiting_summary.is_none());
    }

    fn finish(&mut self, call: CallRef) {
        self.write(call);
        self.calls.remove(&call);
    }

    /// Calls being accounted for.
    pub fn len(&self) -> usize {
        self.calls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.calls.is_empty()
    }
}
