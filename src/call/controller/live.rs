//! Live calls for the operator: the list the admin API serves (`GET /api/v1/calls`,
//! `tolk calls list`) and an operator's hang-up (`POST /api/v1/calls/{call}/hangup`).
//! Asked over a channel and answered from the controller's own state between two events,
//! so nothing is locked and the list is one consistent moment. Callers appear masked, as
//! everywhere an operator looks.

use super::Controller;
use crate::call::flow_call::Ctx;
use crate::sip::dialog::CallRef;
use tokio::sync::oneshot;

/// What the admin API may ask about live calls.
pub enum CallQuery {
    /// Every call in progress, as JSON objects (the `GET /api/v1/calls` contract).
    List(oneshot::Sender<Vec<serde_json::Value>>),
    /// Hang up a call (BYE when answered, 480 before); false when there is no such call.
    Hangup(u64, oneshot::Sender<bool>),
}

impl Controller {
    pub(super) fn on_query(&mut self, q: CallQuery) {
        match q {
            CallQuery::List(tx) => {
                let _ = tx.send(self.live_calls());
            }
            CallQuery::Hangup(call, tx) => {
                let now = std::time::Instant::now();
                let call = CallRef(call);
                let done = self.flows.hang_up(call, &mut ctx!(self, now));
                if done {
                    tracing::info!(call = call.0, "call hung up by an operator");
                }
                let _ = tx.send(done);
            }
        }
    }

    fn live_calls(&self) -> Vec<serde_json::Value> {
        let now = crate::clock::now_micros();
        let mut calls: Vec<serde_json::Value> = self
            .flows
            .live()
            .map(|(call, step, answered)| {
                let record = self.accounting.as_ref().and_then(|a| a.record(call));
                let codec = self
                    .legs
                    .get(&call)
                    .and_then(|l| l.media.borrow().as_ref().map(|m| m.codec.encoding_name()));
                serde_json::json!({
                    "call": call.0,
                    "record": record.map(|r| r.id.to_string()),
                    "caller": record.and_then(|r| r.caller.masked.clone()).unwrap_or_else(|| "anonymous".into()),
                    "dialled": record.map(|r| r.dialled.clone()),
                    "tenant": record.and_then(|r| r.tenant.clone()),
                    "flow": record.and_then(|r| r.flow.clone()),
                    "state": if answered { "answered" } else { "ringing" },
                    "step": step,
                    "room": record.and_then(|r| r.room.clone()),
                    "role": record.and_then(|r| r.role.clone()),
                    "codec": codec,
                    "seconds": record.map(|r| (now - r.started_at).max(0) / 1_000_000),
                })
            })
            .collect();
        calls.sort_by_key(|c| c["call"].as_u64());
        calls
    }
}
