//! Verbs that act on the call's signalling: answer, ring, transfer (REFER), hang up.

use super::*;

/// `Request::Answer`.
pub(super) fn answer(setup: &LegSetup, fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx) {
    let now = ctx.now;
    if fc.answered {
        return done(tx, Ok(Reply::Done));
    }
    let Some(slot) = fc.slot.take() else {
        return done(tx, failed("answer: the call has no media slot"));
    };
    match ctx.core.answer(call, slot.local, now) {
        Ok(media) => {
            metrics::counter!("calls_total", "outcome" => "answered").increment(1);
            if let Some(a) = ctx.accounting.as_deref_mut() {
                let codec = media.as_ref().map(|m| m.codec.encoding_name());
                a.answered(call, codec, crate::clock::now_micros());
            }
            if let Some(m) = &media {
                fc.pcm_rate = crate::call::leg::pcm_rate(m.codec);
            }
            let leg = spawn_leg(
                call,
                slot.port,
                media,
                setup.rtp_timeout,
                setup.prompts.clone(),
                setup.reports.clone(),
            );
            let _ = leg.commands.try_send(LegCommand::Mode(LegMode::Silence));
            ctx.legs.insert(call, leg);
            fc.answered = true;
            done(tx, Ok(Reply::Done))
        }
        Err(e) => {
            metrics::counter!("calls_total", "outcome" => "not_acceptable").increment(1);
            done(tx, failed(format!("answer: {e}")))
        }
    }
}

/// `Request::Ring`.
pub(super) fn ring(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, d: Duration) {
    let now = ctx.now;
    if fc.answered {
        return done(tx, failed("ring: the call is already answered"));
    }
    if !fc.rung {
        let _ = ctx.core.ring(call, now);
        if let Some(a) = ctx.accounting.as_deref_mut() {
            a.ringing(call);
        }
        fc.rung = true;
    }
    fc.pending = Some(Pending {
        wait: Wait::Ring { until: now + d },
        reply: tx,
    });
}

/// `Request::Transfer`.
pub(super) fn transfer(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, target: String) {
    let now = ctx.now;
    if !fc.answered {
        return done(tx, failed("transfer: answer the call first"));
    }
    // A number goes back to the carrier in E.164; URIs are used as given.
    let target = crate::number::normalise(&target).unwrap_or(target);
    match ctx.core.refer(call, &target, now) {
        Ok(()) => {
            if let Some(a) = ctx.accounting.as_deref_mut() {
                a.event(
                    call,
                    CallEventKind::Transfer {
                        to: crate::privacy::mask_number(&target),
                    },
                );
            }
            fc.pending = Some(Pending {
                wait: Wait::Transfer {
                    until: now + TRANSFER_TIMEOUT,
                },
                reply: tx,
            });
        }
        Err(e) => done(tx, failed(format!("transfer: {e}"))),
    }
}

/// `Request::Hangup`.
pub(super) fn hangup(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, cause: u16) {
    let now = ctx.now;
    let r = if fc.answered {
        ctx.core.hangup(call, now)
    } else {
        ctx.core.reject(call, status_for_cause(cause), now)
    };
    if let Some(a) = ctx.accounting.as_deref_mut() {
        a.annotate(call, |r| {
            r.q850_cause = Some(if cause < 128 { cause as i16 } else { 16 })
        });
    }
    fc.hung_up.store(true, Ordering::Relaxed);
    match r {
        Ok(()) => done(tx, Ok(Reply::Done)),
        Err(_) => done(tx, Err(PortError::HungUp)),
    }
}
