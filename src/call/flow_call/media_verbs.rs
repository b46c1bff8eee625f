//! Verbs that act on the call's media leg: play (prompts, tones, text-to-speech), collect
//! digits, record, echo.

use super::*;
use crate::flow::port::Source;

/// `Request::Play`.
pub(super) fn play(
    setup: &LegSetup,
    fc: &mut FlowCall,
    call: CallRef,
    tx: ReplyTx,
    ctx: &mut Ctx,
    source: Source,
    barge_in: bool,
) {
    let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
        return done(tx, failed("play: answer the call first"));
    };
    if barge_in && !fc.digits.is_empty() {
        // Type-ahead: the caller already answered the prompt.
        return done(tx, Ok(Reply::Played { interrupted: true }));
    }
    let cmd = match source {
        Source::Prompt(name) => LegCommand::Play(name),
        Source::Tone(spec) => LegCommand::Tone(spec),
        Source::Say(text) => {
            // The cache file is filed on the call, so erasure can find it.
            let file = tts_file_name(&text);
            if let Some(a) = ctx.accounting.as_deref_mut() {
                a.event(call, CallEventKind::Spoken { file: file.clone() });
            }
            // Spoken off this task; the leg (or the failure) reports it done.
            spawn_tts(
                call,
                text,
                setup.tts_dir.join(file),
                fc.pcm_rate,
                leg.commands.clone(),
                setup.reports.clone(),
            );
            fc.plays_outstanding += 1;
            fc.play_error = None;
            fc.pending = Some(Pending {
                wait: Wait::Play { barge_in },
                reply: tx,
            });
            return;
        }
    };
    if leg.commands.try_send(cmd).is_err() {
        return done(tx, failed("play: the media leg is busy"));
    }
    fc.plays_outstanding += 1;
    fc.play_error = None;
    fc.pending = Some(Pending {
        wait: Wait::Play { barge_in },
        reply: tx,
    });
}

/// `Request::Collect`.
pub(super) fn collect(
    fc: &mut FlowCall,
    tx: ReplyTx,
    ctx: &mut Ctx,
    max: usize,
    terminators: String,
    first: Duration,
    between: Duration,
) {
    let now = ctx.now;
    fc.pending = Some(Pending {
        wait: Wait::Collect {
            max,
            terminators,
            deadline: now + first,
            between,
            digits: String::new(),
        },
        reply: tx,
    });
    FlowCalls::feed_digits(fc, now);
}

/// `Request::Record`.
pub(super) fn record(
    setup: &LegSetup,
    fc: &mut FlowCall,
    call: CallRef,
    tx: ReplyTx,
    ctx: &mut Ctx,
    max: Duration,
    beep: bool,
) {
    let now = ctx.now;
    let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
        return done(tx, failed("record: answer the call first"));
    };
    if let Err(e) = crate::private_files::create_dir(&setup.recordings_dir) {
        return done(tx, failed(format!("record: {e}")));
    }
    let record = ctx.accounting.as_deref().and_then(|a| a.record(call));
    if record.is_some_and(opted_out_of_recording) {
        return done(tx, failed("record: the caller opted out of recording"));
    }
    let uuid = uuid::Uuid::now_v7();
    let id = uuid.to_string();
    let file = format!("{id}.wav");
    let path = setup.recordings_dir.join(&file);
    // Filed before a byte is written: the journalled event names the file even if
    // the call or the gateway dies mid-recording, and erasure and retention use it.
    if let Some(a) = ctx.accounting.as_deref_mut() {
        a.annotate(call, |r| r.recording_id = Some(uuid));
        a.event(
            call,
            CallEventKind::Recording {
                id: id.clone(),
                file: file.clone(),
            },
        );
        if let Some(r) = a.record(call) {
            let row = crate::cdr::model::RecordingRow {
                id: uuid,
                call_id: Some(r.id),
                room: None,
                room_session: None,
                path: file.clone(),
                started_at: crate::clock::now_micros(),
                ended_at: None,
                seconds: None,
                caller_pseudonym: r.caller.pseudonym.clone(),
                retention_class: r.retention_class.clone(),
                expires_at: r.expires_at,
            };
            a.journal(crate::cdr::model::JournalEntry::Recording(Box::new(row)));
        }
    }
    if beep {
        let _ = leg.commands.try_send(LegCommand::Tone("beep".into()));
        fc.plays_outstanding += 1;
    }
    let _ = leg.commands.try_send(LegCommand::Record(path));
    fc.digits.clear();
    fc.pending = Some(Pending {
        wait: Wait::Record {
            until: now + max,
            id,
            stopping: false,
        },
        reply: tx,
    });
}

/// `Request::Echo`.
pub(super) fn echo(fc: &mut FlowCall, call: CallRef, tx: ReplyTx, ctx: &mut Ctx, max: Duration) {
    let now = ctx.now;
    let Some(leg) = ctx.legs.get(&call).filter(|_| fc.answered) else {
        return done(tx, failed("echo: answer the call first"));
    };
    let _ = leg.commands.try_send(LegCommand::Mode(LegMode::Echo));
    fc.pending = Some(Pending {
        wait: Wait::Echo { until: now + max },
        reply: tx,
    });
}

/// The TTS cache's file for `text`: a hash of it (the text itself may be personal).
pub(super) fn tts_file_name(text: &str) -> String {
    use sha2::Digest;
    let digest = sha2::Sha256::digest(text.as_bytes());
    let name: String = digest.iter().take(16).map(|b| format!("{b:02x}")).collect();
    format!("{name}.wav")
}

/// Speaks `text` with espeak-ng into `path` in the TTS cache (named by [`tts_file_name`];
/// synthesised only when missing), reads and resamples it to the leg's `rate` off the
/// gateway task, then has the leg play it. A missing espeak-ng or a failed synthesis is
/// reported as a playback that could not start, so the flow's `say` fails with the reason.
pub(super) fn spawn_tts(
    call: CallRef,
    text: String,
    path: PathBuf,
    rate: u32,
    leg: mpsc::Sender<LegCommand>,
    reports: mpsc::Sender<LegReport>,
) {
    let dir = path.parent().map(PathBuf::from).unwrap_or_default();
    tokio::spawn(async move {
        let target = path.clone();
        let made = tokio::task::spawn_blocking(move || -> Result<Arc<[i16]>, String> {
            let load = |p: &std::path::Path| {
                crate::media_files::prompts::read_mono_wav(p)
                    .map(|(samples, from)| crate::media::prompt::resampled(&samples, from, rate))
                    .map_err(|e| e.to_string())
            };
            if target.exists() {
                return load(&target);
            }
            // The cache names files by the spoken text's hash, and the text may be personal.
            crate::private_files::create_dir(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
            let tmp = target.with_extension("tmp.wav");
            let out = std::process::Command::new("espeak-ng")
                .args(["-v", "en-us", "-s", "160", "-w"])
                .arg(&tmp)
                .arg("--")
                .arg(&text)
                .output()
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::NotFound => "espeak-ng is not installed (Debian package espeak-ng)".to_string(),
                    _ => format!("espeak-ng: {e}"),
                })?;
            if !out.status.success() {
                return Err(format!(
                    "espeak-ng failed: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ));
            }
            crate::private_files::restrict(&tmp).map_err(|e| format!("{}: {e}", tmp.display()))?;
            std::fs::rename(&tmp, &target).map_err(|e| e.to_string())?;
            load(&target)
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match made {
            Ok(pcm) => {
                let what = format!("say:{}", path.display());
                if leg.send(LegCommand::PlayPcm { pcm, what }).await.is_err() {
                    // The call ended meanwhile: nothing waits for it.
                }
            }
            Err(why) => {
                let why = crate::privacy::mask_numbers_in(&why).into_owned();
                tracing::warn!(call = call.0, error = %why, "text-to-speech failed");
                let _ = reports
                    .send(LegReport::PlaybackDone {
                        call,
                        what: format!("say:{why}"),
                        ok: false,
                    })
                    .await;
            }
        }
    });
}
