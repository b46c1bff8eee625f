//! `/api/v1`: CDR lists and reports, subject access, opt-outs, legal holds, erasure and
//! retention sweeps, behind bearer tokens from `admin.tokens`. Errors are JSON
//! (`{"error": "..."}`) with the status that fits. Numbers are accepted as input (and turned
//! into pseudonyms at once) but never returned.

use crate::cdr::privacy::PseudonymKey;
use crate::cdr::query::{self, ListFilter, ReportBy};
use crate::cdr::writer::CdrSink;
use crate::cdr::{correction, requests, retention, subject};
use crate::room::PinError;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use std::sync::Arc;
use std::time::Duration;

/// What the API needs from the CDR service.
#[derive(Clone)]
pub struct CdrApi {
    pub pool: sqlx::PgPool,
    pub key: PseudonymKey,
    pub sink: CdrSink,
    /// Where erasure and sweeps look on disk.
    pub stores: crate::cdr::erasure::ErasureStores,
    pub erasure: crate::cdr::erasure::ErasurePolicy,
    /// What the retention sweep reaches and the clocks of each.
    pub sweep: retention::SweepScope,
}

/// Asks the gateway to reload the dialplan; answered with a summary or the errors.
pub type ReloadRequest = tokio::sync::oneshot::Sender<Result<String, String>>;

/// Asks the call controller about live calls (the gateway passes it on).
pub enum CallsRequest {
    /// Every call in progress, as the `GET /api/v1/calls` objects.
    List(tokio::sync::oneshot::Sender<Vec<serde_json::Value>>),
    /// Hang up one (true when there was such a call).
    Hangup(u64, tokio::sync::oneshot::Sender<bool>),
}

/// The API's state.
#[derive(Clone)]
pub struct ApiState {
    pub tokens: Vec<String>,
    /// Served on the owner-only control socket (`admin::control`): the kernel has checked
    /// who is asking, so no token is asked for.
    pub control_socket: bool,
    pub cdr: Option<CdrApi>,
    /// Conference rooms and their members (masked numbers only).
    pub rooms: crate::room::Rooms,
    pub reload: tokio::sync::mpsc::Sender<ReloadRequest>,
    /// Live calls, from the call controller.
    pub calls: tokio::sync::mpsc::Sender<CallsRequest>,
    /// The web console's one-time links and sessions (issued here, redeemed by the console).
    pub sign_in: Arc<super::console::SignIn>,
}

type Shared = Arc<ApiState>;

/// An API error.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<query::QueryError> for ApiError {
    fn from(e: query::QueryError) -> Self {
        match e {
            query::QueryError::Invalid(m) => ApiError(StatusCode::BAD_REQUEST, m),
            query::QueryError::Db(e) => ApiError(StatusCode::SERVICE_UNAVAILABLE, format!("database: {e}")),
        }
    }
}

/// A valid bearer token, and the CDR service.
fn authorise<'a>(state: &'a ApiState, headers: &HeaderMap) -> Result<&'a CdrApi, ApiError> {
    check_token(state, headers)?;
    state.cdr.as_ref().ok_or_else(|| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "CDRs are disabled (cdr.enabled = false)".into(),
        )
    })
}

/// Whether the request may use the API: the control socket, or a good bearer token.
pub(crate) fn token_ok(state: &ApiState, headers: &HeaderMap) -> bool {
    check_token(state, headers).is_ok()
}

/// Whether `given` is one of `admin.tokens` (every token compared in full).
pub(crate) fn token_listed(state: &ApiState, given: &str) -> bool {
    state
        .tokens
        .iter()
        .fold(false, |acc, t| acc | crate::keys::same_secret(t, given))
}

/// A bearer token from `admin.tokens`.
fn check_token(state: &ApiState, headers: &HeaderMap) -> Result<(), ApiError> {
    if state.control_socket {
        return Ok(());
    }
    if state.tokens.is_empty() {
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            "the API is disabled: set admin.tokens in tolk.toml (on the gateway's machine, the tolk CLI needs no token: it uses the control socket)".into(),
        ));
    }
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .ok_or_else(|| ApiError(StatusCode::UNAUTHORIZED, "missing bearer token".into()))?;
    if !token_listed(state, given) {
        return Err(ApiError(StatusCode::UNAUTHORIZED, "unknown bearer token".into()));
    }
    Ok(())
}

/// `GET /api/v1/rooms`: rooms with members.
async fn list_rooms(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    Ok(Json(serde_json::json!({ "rooms": s.rooms.list() })))
}

/// Asks the call controller (3 s at most); None when it does not answer.
pub(crate) async fn ask_calls<T>(
    s: &ApiState,
    request: impl FnOnce(tokio::sync::oneshot::Sender<T>) -> CallsRequest,
) -> Option<T> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.calls.send(request(tx)).await.ok()?;
    tokio::time::timeout(Duration::from_secs(3), rx).await.ok()?.ok()
}

/// `GET /api/v1/calls`: the calls in progress (masked callers), oldest first.
async fn list_calls(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    match ask_calls(&s, CallsRequest::List).await {
        Some(calls) => Ok(Json(serde_json::json!({ "calls": calls }))),
        None => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the call controller".into(),
        )),
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LinkBody {
    #[serde(default)]
    next: String,
}

/// `POST /api/v1/console/links`: a one-time web console sign-in link (`tolk console url`).
async fn console_link(
    State(s): State<Shared>,
    headers: HeaderMap,
    body: Option<Json<LinkBody>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let next = body.map(|b| b.0.next).unwrap_or_default();
    let (url, seconds) = s
        .sign_in
        .issue_link(&next)
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, format!("no random token: {e}")))?;
    tracing::info!("console: one-time sign-in link issued");
    Ok(Json(serde_json::json!({ "url": url, "expires_in_seconds": seconds })))
}

/// `POST /api/v1/calls/{call}/hangup`: an operator ends a call (BYE, or 480 before answer).
async fn hang_up_call(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(call): Path<u64>,
) -> Result<StatusCode, ApiError> {
    check_token(&s, &headers)?;
    match ask_calls(&s, |tx| CallsRequest::Hangup(call, tx)).await {
        Some(true) => Ok(StatusCode::NO_CONTENT),
        Some(false) => Err(ApiError(StatusCode::NOT_FOUND, "no such call in progress".into())),
        None => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the call controller".into(),
        )),
    }
}

fn room_error(e: crate::room::ControlError) -> ApiError {
    match e {
        crate::room::ControlError::NoRoom => {
            ApiError(StatusCode::NOT_FOUND, "no such room (or it has no members)".into())
        }
        crate::room::ControlError::NoMember => ApiError(StatusCode::NOT_FOUND, "no such member in this room".into()),
    }
}

fn record_error(e: crate::room::RecordError) -> ApiError {
    use crate::room::RecordError::*;
    match e {
        NoRoom => ApiError(StatusCode::NOT_FOUND, "no such room (or it has no members)".into()),
        AlreadyRecording => ApiError(StatusCode::CONFLICT, "the room is already being recorded".into()),
        NotRecording => ApiError(StatusCode::CONFLICT, "the room is not being recorded".into()),
        Unavailable => ApiError(StatusCode::SERVICE_UNAVAILABLE, "rooms are not mixed here".into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PinsBody {
    pin: Option<String>,
    moderator_pin: Option<String>,
}

/// `PUT /api/v1/rooms/{room}/pins`: a room's participant and moderator PINs (null or absent
/// removes one); flows' `room_role` sees them at once, and they outlive dialplan reloads and
/// restarts (`data_dir/rooms/pins.json`). 500 when that file cannot be written (nothing changed).
async fn set_pins(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(b): Json<PinsBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    // Off the async workers: setting PINs writes and fsyncs the PIN file.
    let rooms = s.rooms.clone();
    let name = room.clone();
    off_the_workers("setting the PINs", move || {
        rooms.set_pins(&name, b.pin, b.moderator_pin)
    })
    .await?;
    // PINs are not echoed back.
    Ok(Json(serde_json::json!({ "room": room, "pins": "set" })))
}

/// `PUT /api/v1/rooms/{room}/settings`: defines the room as a rooms.toml `[room.NAME]` table
/// given as a JSON object (an interpretation room's floor, channels and PINs, or a conference
/// room's), over rooms.toml's and kept across reloads and restarts
/// (`data_dir/rooms/rooms.json`). 400 with the reason (never a PIN) for a wrong table, 500
/// when the file cannot be written (nothing changed).
async fn define_room(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(room): Path<String>,
    Json(body): Json<serde_json::Value>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let rooms = s.rooms.clone();
    let name = room.clone();
    // Off the async workers: the definition is written and fsynced.
    off_the_workers("defining the room", move || rooms.define(&name, body)).await?;
    let settings = s.rooms.settings(&room);
    Ok(Json(serde_json::json!({
        "room": room,
        "defined": true,
        // What the room now is (PINs are not echoed).
        "interpretation": settings.interpretation.map(|i| serde_json::json!({
            "floor": i.layout.floor_language,
            "bleed_db": i.layout.bleed_db,
            "channels": i.layout.channels.iter().map(|c| serde_json::json!({
                "number": c.number,
                "language": c.language,
                "booth_pin": i.interpreter_pins.iter().any(|(n, _)| *n == c.number),
            })).collect::<Vec<_>>(),
        })),
    })))
}

/// `DELETE /api/v1/rooms/{room}/settings`: forgets the API's definition (rooms.toml's, if
/// any, serves again); 404 when the API had not defined the room.
async fn undefine_room(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let rooms = s.rooms.clone();
    let name = room.clone();
    let had = off_the_workers("removing the room", move || rooms.undefine(&name)).await?;
    if !had {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("room `{room}` was not defined through the API"),
        ));
    }
    Ok(Json(serde_json::json!({ "room": room, "defined": false })))
}

/// Runs a room change that writes and fsyncs its file (PINs, definitions) on the blocking
/// pool, not on the async workers: 400 for a wrong request, 500 when it was not kept.
async fn off_the_workers<T: Send + 'static>(
    what: &str,
    change: impl FnOnce() -> Result<T, PinError> + Send + 'static,
) -> Result<T, ApiError> {
    match tokio::task::spawn_blocking(change).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(PinError::Invalid(m))) => Err(ApiError(StatusCode::BAD_REQUEST, m)),
        Ok(Err(PinError::NotKept(m))) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, m)),
        Err(e) => Err(ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed: {e}"),
        )),
    }
}

/// `GET /api/v1/rooms/{room}`: one room with its members.
async fn get_room(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(room): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let r = s
        .rooms
        .get(&room)
        .ok_or_else(|| room_error(crate::room::ControlError::NoRoom))?;
    Ok(Json(serde_json::json!(r)))
}

/// `POST /api/v1/rooms/{room}/lock` and `/unlock`.
async fn room_action(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((room, action)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    match action.as_str() {
        "lock" | "unlock" => s.rooms.set_locked(&room, action == "lock").map_err(room_error)?,
        "mute" | "unmute" => {
            s.rooms.mute_participants(&room, action == "mute").map_err(room_error)?;
        }
        "record" => {
            s.rooms.start_recording(&room).map_err(record_error)?;
        }
        "stop-recording" => s.rooms.stop_recording(&room).map_err(record_error)?,
        "pause-recording" | "resume-recording" => s
            .rooms
            .pause_recording(&room, action == "pause-recording")
            .map_err(record_error)?,
        _ => {
            return Err(ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "unknown room action `{action}`; try lock, unlock, mute, unmute, record, pause-recording, resume-recording or stop-recording"
                ),
            ));
        }
    }
    let r = s
        .rooms
        .get(&room)
        .ok_or_else(|| room_error(crate::room::ControlError::NoRoom))?;
    Ok(Json(serde_json::json!(r)))
}

/// `POST /api/v1/rooms/{room}/members/{call}/{mute|unmute|deaf|undeaf|eject}`.
async fn member_action(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((room, call, action)): Path<(String, u64, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    match action.as_str() {
        "mute" | "unmute" => {
            let m = s.rooms.set_muted(&room, call, action == "mute").map_err(room_error)?;
            Ok(Json(serde_json::json!(m)))
        }
        "deaf" | "undeaf" => {
            let m = s.rooms.set_deaf(&room, call, action == "deaf").map_err(room_error)?;
            Ok(Json(serde_json::json!(m)))
        }
        "eject" => {
            s.rooms.eject(&room, call).map_err(room_error)?;
            Ok(Json(serde_json::json!({ "ejected": call })))
        }
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("unknown member action `{action}`; try mute, unmute, deaf, undeaf or eject"),
        )),
    }
}

/// An interpretation request the room refused: 404 for what does not exist, 409 otherwise.
fn interpretation_error(r: crate::room::interpretation::Refused) -> ApiError {
    use crate::room::interpretation::Refused;
    let status = match r {
        Refused::NoSuchMember | Refused::NoSuchChannel => StatusCode::NOT_FOUND,
        _ => StatusCode::CONFLICT,
    };
    ApiError(status, r.to_string())
}

/// The room's view after an interpretation request.
fn interpretation_view(s: &Shared, room: &str) -> Result<Json<serde_json::Value>, ApiError> {
    let r = s
        .rooms
        .get(room)
        .ok_or_else(|| room_error(crate::room::ControlError::NoRoom))?;
    Ok(Json(serde_json::json!(r)))
}

/// `POST /api/v1/rooms/{room}/members/{call}/channel/{channel}`: what a member of an
/// interpretation room hears (0: the floor); for an interpreter, its booth's source (relay).
async fn move_channel(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((room, call, channel)): Path<(String, u64, u8)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    s.rooms
        .interpretation_request(&room, |m| m.choose(call, crate::room::mixer::Bus::from_number(channel)))
        .map_err(interpretation_error)?;
    interpretation_view(&s, &room)
}

/// `POST /api/v1/rooms/{room}/booths/{booth}/handover[?to=CALL]`: hands the booth's
/// microphone to `to`, or to the next partner, whether the live interpreter offered or not.
async fn force_handover(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((room, booth)): Path<(String, u8)>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let to = match q.get("to") {
        Some(v) => Some(v.parse::<u64>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("to={v}: give the partner's call number"),
            )
        })?),
        None => None,
    };
    s.rooms
        .interpretation_request(&room, |m| m.force_handover(booth, to))
        .map_err(interpretation_error)?;
    interpretation_view(&s, &room)
}

/// `POST /api/v1/rooms/{room}/booths/{booth}/relay/{channel}`: the booth's source (0: the
/// floor); a loop is refused with 409.
async fn set_relay(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((room, booth, channel)): Path<(String, u8, u8)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    s.rooms
        .interpretation_request(&room, |m| m.relay(booth, crate::room::mixer::Bus::from_number(channel)))
        .map_err(interpretation_error)?;
    interpretation_view(&s, &room)
}

/// `GET /api/v1/rooms/events`: server-sent events (joined, left, muted, unmuted, held,
/// resumed, talking, quiet, locked, unlocked), each `data` a JSON object; a reader too slow
/// to keep up gets a `lagged` event saying how many it missed.
async fn room_events(
    State(s): State<Shared>,
    headers: HeaderMap,
) -> Result<axum::response::sse::Sse<impl futures_util::Stream<Item = SseEvent>>, ApiError> {
    check_token(&s, &headers)?;
    Ok(room_event_stream(&s.rooms, true))
}

/// One server-sent event.
pub(crate) type SseEvent = Result<axum::response::sse::Event, std::convert::Infallible>;

/// The rooms' events as server-sent events: named by their kind (`named`, the API's
/// contract), or all as plain messages (the console's pages, which refresh on any).
pub(crate) fn room_event_stream(
    rooms: &crate::room::Rooms,
    named: bool,
) -> axum::response::sse::Sse<impl futures_util::Stream<Item = SseEvent> + use<>> {
    use axum::response::sse::{Event, KeepAlive, Sse};
    use tokio::sync::broadcast::error::RecvError;
    let rx = rooms.subscribe();
    let stream = futures_util::stream::unfold(rx, move |mut rx| async move {
        let (name, data) = match rx.recv().await {
            Ok(e) => (e.name(), serde_json::to_string(&e).unwrap_or_default()),
            Err(RecvError::Lagged(n)) => {
                // An observer too slow for the stream: counted and told (the CDRs do not
                // depend on it; they are filed from the rooms' ledger, which loses nothing).
                metrics::counter!("room_events_lagged_total").increment(n);
                tracing::warn!(missed = n, "a room event stream reader fell behind");
                ("lagged", format!("{{\"missed\":{n}}}"))
            }
            Err(RecvError::Closed) => return None,
        };
        let event = Event::default().data(data);
        Some((Ok(if named { event.event(name) } else { event }), rx))
    });
    Sse::new(stream).keep_alive(KeepAlive::default())
}

/// `POST /api/v1/dialplan/reload`: all or nothing; a bad plan leaves the old one serving.
async fn reload_dialplan(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    check_token(&s, &headers)?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    s.reload
        .send(tx)
        .await
        .map_err(|_| ApiError(StatusCode::SERVICE_UNAVAILABLE, "the gateway is stopping".into()))?;
    match rx.await {
        Ok(Ok(summary)) => Ok(Json(serde_json::json!({ "reloaded": true, "summary": summary }))),
        Ok(Err(errors)) => Err(ApiError(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("dialplan rejected; the previous plan keeps serving:\n{errors}"),
        )),
        Err(_) => Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "no answer from the gateway".into(),
        )),
    }
}

/// A number from a request, as E.164, or 400.
fn number(n: &str) -> Result<String, ApiError> {
    crate::number::normalise(n)
        .ok_or_else(|| ApiError(StatusCode::BAD_REQUEST, "`number` is not a phone number".into()))
}

/// The gateway's pseudonym of an optional `number` parameter (400 when it is not a phone
/// number): the subject's name in the request register and the audits.
fn optional_pseudonym(api: &CdrApi, n: Option<&str>) -> Result<Option<String>, ApiError> {
    Ok(n.map(number).transpose()?.map(|n| api.key.pseudonym(&n)))
}

/// Every pseudonym of an optional `number` parameter: the gateway's and each tenant's, as
/// the records name the caller.
async fn optional_pseudonyms(api: &CdrApi, n: Option<&str>) -> Result<Option<Vec<String>>, ApiError> {
    match optional_pseudonym(api, n)? {
        Some(p) => Ok(Some(subject::pseudonyms_of(&api.pool, &api.key, &p).await?)),
        None => Ok(None),
    }
}

#[derive(Deserialize)]
struct ListParams {
    from: Option<String>,
    to: Option<String>,
    number: Option<String>,
    dialled: Option<String>,
    tenant: Option<String>,
    disposition: Option<String>,
    room: Option<String>,
    limit: Option<i64>,
    after: Option<String>,
}

async fn list_cdrs(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<ListParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let caller_pseudonyms = optional_pseudonyms(api, p.number.as_deref()).await?;
    let limit = p.limit.unwrap_or(100).clamp(1, 1000);
    let records = query::list(
        &api.pool,
        &ListFilter {
            from: p.from,
            to: p.to,
            caller_pseudonyms,
            dialled: p.dialled.as_deref().map(number).transpose()?,
            tenant: p.tenant,
            disposition: p.disposition,
            room: p.room,
            limit,
            after: p.after,
        },
    )
    .await?;
    let next = (records.len() as i64 == limit)
        .then(|| records.last().and_then(|r| r.get("cursor")).cloned())
        .flatten();
    Ok(Json(serde_json::json!({ "records": records, "next": next })))
}

#[derive(Deserialize)]
struct ReportParams {
    by: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

async fn reports(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<ReportParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let by = ReportBy::parse(p.by.as_deref().unwrap_or("day"))?;
    let rows = query::report(&api.pool, by, p.from.as_deref(), p.to.as_deref()).await?;
    Ok(Json(serde_json::json!({ "rows": rows })))
}

#[derive(Deserialize)]
struct SubjectBody {
    number: String,
    #[serde(default)]
    requested_by: Option<String>,
}

async fn export(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<SubjectBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = api.key.pseudonym(&number(&b.number)?);
    let by = b.requested_by.as_deref().unwrap_or("admin api");
    Ok(Json(
        subject::answer_access(&api.pool, &api.key, &p, by, api.erasure.due_days).await?,
    ))
}

async fn erase(State(s): State<Shared>, headers: HeaderMap, Json(b): Json<SubjectBody>) -> Result<Response, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = api.key.pseudonym(&number(&b.number)?);
    let requested_by = b.requested_by.as_deref().unwrap_or("admin api");
    // PostgreSQL unreachable: the request waits in the journal, in order behind the records
    // it must erase, and the writer carries it out when the database is back.
    let reachable = tokio::time::timeout(Duration::from_secs(3), sqlx::query("SELECT 1").execute(&api.pool)).await;
    if !matches!(reachable, Ok(Ok(_))) {
        api.sink.write(crate::cdr::model::JournalEntry::Erasure(Box::new(
            crate::cdr::model::QueuedErasure {
                pseudonym: p,
                policy: api.erasure,
                requested_by: requested_by.to_string(),
                requested_at: crate::cdr::model::now_micros(),
            },
        )));
        tracing::info!("erasure by number queued in the CDR journal: the database is unreachable");
        return Ok((
            StatusCode::ACCEPTED,
            Json(serde_json::json!({
                "queued": true,
                "detail": "PostgreSQL is unreachable: the erasure is kept in the CDR journal and carried out when the database is back",
            })),
        )
            .into_response());
    }
    let all = subject::pseudonyms_of(&api.pool, &api.key, &p).await?;
    let spooled = crate::cdr::writer::compact(&api.sink, &all, Duration::from_secs(10))
        .await
        .map_err(|e| ApiError(StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let request = crate::cdr::erasure::Erasure {
        pseudonym: &p,
        policy: api.erasure,
        requested_by,
        requested_at: None,
        spool_entries: spooled,
    };
    let report = crate::cdr::erasure::erase_with(&api.pool, &request, &api.stores).await?;
    tracing::info!(
        request = report.request_id,
        calls = report.calls,
        "erasure by number done"
    );
    Ok((StatusCode::OK, Json(report)).into_response())
}

#[derive(Deserialize)]
struct OptOutBody {
    number: String,
    scope: String,
    /// One tenant's calls only (none: every call).
    #[serde(default)]
    tenant: Option<String>,
    #[serde(default)]
    source: Option<String>,
}

async fn list_opt_outs(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    Ok(Json(
        serde_json::json!({ "opt_outs": subject::list_opt_outs(&api.pool).await? }),
    ))
}

async fn add_opt_out(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<OptOutBody>,
) -> Result<StatusCode, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = api.key.pseudonym(&number(&b.number)?);
    let source = b.source.as_deref().unwrap_or("admin api");
    let (tenant, due) = (b.tenant.as_deref(), api.erasure.due_days);
    subject::opt_out_on_request(&api.pool, &api.key, &p, tenant, &b.scope, source, due).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn remove_opt_out(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<OptOutBody>,
) -> Result<StatusCode, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = api.key.pseudonym(&number(&b.number)?);
    // Withdrawn for one tenant's calls, or (no tenant) everywhere it was registered.
    let all = subject::opt_in_pseudonyms(&api.pool, &api.key, &p, b.tenant.as_deref()).await?;
    if subject::opt_in(&api.pool, &all, &b.scope).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "no such opt-out".into()))
    }
}

#[derive(Deserialize)]
struct HoldBody {
    id: Option<uuid::Uuid>,
    number: Option<String>,
    hold: bool,
}

async fn hold(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<HoldBody>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = optional_pseudonyms(api, b.number.as_deref()).await?;
    let changed = subject::set_hold(&api.pool, b.id, p.as_deref(), b.hold).await?;
    Ok(Json(serde_json::json!({ "records": changed, "hold": b.hold })))
}

async fn sweep(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<retention::SweepReport>, ApiError> {
    let api = authorise(&s, &headers)?;
    Ok(Json(retention::sweep(&api.pool, 5000, &api.sweep).await?))
}

#[derive(Deserialize)]
struct RequestParams {
    #[serde(default)]
    all: bool,
    number: Option<String>,
}

/// The subject request register: open requests by due date (`?all=true`: answered ones too).
async fn list_requests(
    State(s): State<Shared>,
    headers: HeaderMap,
    Query(p): Query<RequestParams>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let subject = optional_pseudonym(api, p.number.as_deref())?.map(|p| crate::cdr::erasure::subject_ref(&p));
    let mut conn = api.pool.acquire().await.map_err(query::QueryError::from)?;
    let rows = requests::list(&mut conn, p.all, subject.as_deref()).await?;
    Ok(Json(serde_json::json!({ "requests": rows })))
}

#[derive(Deserialize)]
struct NewRequestBody {
    kind: String,
    number: String,
    received_at: Option<String>,
    #[serde(default)]
    note: String,
    requested_by: Option<String>,
}

/// Logs a request as it arrives: its 30-day clock starts at `received_at` (default now).
async fn log_request(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<NewRequestBody>,
) -> Result<(StatusCode, Json<serde_json::Value>), ApiError> {
    let api = authorise(&s, &headers)?;
    let subject = crate::cdr::erasure::subject_ref(&api.key.pseudonym(&number(&b.number)?));
    let mut conn = api.pool.acquire().await.map_err(query::QueryError::from)?;
    let row = requests::log(
        &mut conn,
        &requests::NewRequest {
            kind: requests::RequestKind::parse(&b.kind)?,
            subject_ref: &subject,
            received_at: b.received_at.as_deref(),
            received_micros: None,
            requested_by: b.requested_by.as_deref().unwrap_or("admin api"),
            note: &b.note,
            due_days: api.erasure.due_days,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(row)))
}

#[derive(Deserialize)]
struct CloseBody {
    note: String,
}

/// Closes an open request without carrying it out (the note says why).
async fn close_request(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path(id): Path<uuid::Uuid>,
    Json(b): Json<CloseBody>,
) -> Result<StatusCode, ApiError> {
    let api = authorise(&s, &headers)?;
    let mut conn = api.pool.acquire().await.map_err(query::QueryError::from)?;
    if requests::close(&mut conn, id, &b.note).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError(StatusCode::NOT_FOUND, "no open request with that id".into()))
    }
}

async fn list_tenants(State(s): State<Shared>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    let api = authorise(&s, &headers)?;
    let rows = crate::cdr::tenants::list(&api.pool, api.sweep.account_closed_days).await?;
    Ok(Json(serde_json::json!({ "tenants": rows })))
}

#[derive(Deserialize)]
struct CloseTenantBody {
    at: Option<String>,
}

/// `close`: the tenant's account closed (`at`, default now): the clock to deletion starts;
/// `reopen`: it stops.
async fn tenant_account(
    State(s): State<Shared>,
    headers: HeaderMap,
    Path((tenant, action)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let api = authorise(&s, &headers)?;
    match action.as_str() {
        "close" => {
            // The body is optional: none (or empty) closes the account now.
            let at = match body.is_empty() {
                true => None,
                false => {
                    serde_json::from_slice::<CloseTenantBody>(&body)
                        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("body: {e}")))?
                        .at
                }
            };
            let days = api.sweep.account_closed_days;
            let row = crate::cdr::tenants::close(&api.pool, &tenant, at.as_deref(), days).await?;
            Ok(Json(row).into_response())
        }
        "reopen" if crate::cdr::tenants::reopen(&api.pool, &tenant).await? => {
            Ok(StatusCode::NO_CONTENT.into_response())
        }
        "reopen" => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("tenant `{tenant}` is not closed"),
        )),
        _ => Err(ApiError(
            StatusCode::NOT_FOUND,
            "the actions are close and reopen".into(),
        )),
    }
}

#[derive(Deserialize)]
struct CorrectionBody {
    number: String,
    #[serde(default)]
    set: std::collections::BTreeMap<String, String>,
    #[serde(default)]
    clear: Vec<String>,
    call_id: Option<uuid::Uuid>,
    requested_by: Option<String>,
}

/// Corrects `language` or `tags.<key>` on a caller's records (all, or `call_id`'s).
async fn correct(
    State(s): State<Shared>,
    headers: HeaderMap,
    Json(b): Json<CorrectionBody>,
) -> Result<Json<correction::CorrectionReport>, ApiError> {
    let api = authorise(&s, &headers)?;
    let p = api.key.pseudonym(&number(&b.number)?);
    let set: Vec<(String, String)> = b.set.into_iter().collect();
    let by = b.requested_by.as_deref().unwrap_or("admin api");
    let c = correction::Correction::from_pairs(&set, &b.clear, b.call_id, by)?;
    let all = subject::pseudonyms_of(&api.pool, &api.key, &p).await?;
    let subject = crate::cdr::erasure::subject_ref(&p);
    let mut conn = api.pool.acquire().await.map_err(query::QueryError::from)?;
    Ok(Json(
        correction::correct(&mut conn, &all, &subject, &c, api.erasure.due_days).await?,
    ))
}

async fn openapi() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

/// The `/api/v1` routes.
pub fn routes(state: Shared) -> Router {
    Router::new()
        .route("/api/v1/openapi.json", get(openapi))
        .route("/api/v1/cdrs", get(list_cdrs))
        .route("/api/v1/reports", get(reports))
        .route("/api/v1/subjects/export", post(export))
        .route("/api/v1/erasures", post(erase))
        .route(
            "/api/v1/optouts",
            get(list_opt_outs).post(add_opt_out).delete(remove_opt_out),
        )
        .route("/api/v1/holds", post(hold))
        .route("/api/v1/sweeps", post(sweep))
        .route("/api/v1/requests", get(list_requests).post(log_request))
        .route("/api/v1/requests/{id}/close", post(close_request))
        .route("/api/v1/corrections", post(correct))
        .route("/api/v1/tenants", get(list_tenants))
        .route("/api/v1/tenants/{tenant}/{action}", post(tenant_account))
        .route("/api/v1/console/links", post(console_link))
        .route("/api/v1/calls", get(list_calls))
        .route("/api/v1/calls/{call}/hangup", post(hang_up_call))
        .route("/api/v1/rooms", get(list_rooms))
        .route("/api/v1/rooms/events", get(room_events))
        .route("/api/v1/rooms/{room}", get(get_room))
        .route("/api/v1/rooms/{room}/pins", axum::routing::put(set_pins))
        .route(
            "/api/v1/rooms/{room}/settings",
            axum::routing::put(define_room).delete(undefine_room),
        )
        .route("/api/v1/rooms/{room}/{action}", post(room_action))
        .route("/api/v1/rooms/{room}/members/{call}/{action}", post(member_action))
        .route(
            "/api/v1/rooms/{room}/members/{call}/channel/{channel}",
            post(move_channel),
        )
        .route("/api/v1/rooms/{room}/booths/{booth}/handover", post(force_handover))
        .route("/api/v1/rooms/{room}/booths/{booth}/relay/{channel}", post(set_relay))
        .route("/api/v1/dialplan/reload", post(reload_dialplan))
        .with_state(state)
}

#[cfg(test)]
mod tests {
    /// The OpenAPI document is kept by hand: it must name every route the router serves, and
    /// nothing it does not.
    #[test]
    fn the_openapi_document_names_every_route() {
        let doc: serde_json::Value = serde_json::from_str(include_str!("openapi.json")).expect("valid JSON");
        let mut documented: Vec<String> = doc["paths"].as_object().expect("paths").keys().cloned().collect();
        // Every string literal in this file that is an API path (the router's).
        let mut routed: Vec<String> = include_str!("api.rs")
            .split("\"/api/v1/")
            .skip(1)
            .filter_map(|rest| rest.split_once('"').map(|(path, _)| path))
            .filter(|path| {
                !path.is_empty()
                    && path
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "/{}._-".contains(c))
            })
            .map(|path| String::from("/api/v1/") + path)
            .collect();
        routed.sort_unstable();
        routed.dedup();
        documented.sort_unstable();
        assert_eq!(
            routed, documented,
            "routes (left) and src/admin/openapi.json paths (right)"
        );
    }
}
