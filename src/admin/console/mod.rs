//! The web console under `/console/` on the admin listener: server-rendered pages
//! (minijinja templates embedded in the binary), live parts refreshed over the admin
//! API's server-sent events, charts drawn as SVG on the server ([`charts`]), and actions
//! that go to the same `/api/v1` handlers the CLI uses (served again under
//! `/console/api/v1` for a signed-in browser).
//!
//! Signing in: `tolk console url` asks the running gateway (control socket) for a one-time
//! link ([`sessions`]); opening it sets an `HttpOnly`, `SameSite=Strict` session cookie.
//! An admin token works too: as a bearer header, or typed once into the sign-in form.
//! Every change asked with a session cookie must carry the session's CSRF token
//! (`X-CSRF-Token`, or a form's `csrf` field) and must not come from another site
//! (`Sec-Fetch-Site`). No page takes personal data in its URL: a search by number is a
//! POST.

pub mod charts;
mod pages;
pub mod samples;
pub mod sessions;

use super::api::{self, ApiState};
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Form, Router};
use metrics_exporter_prometheus::PrometheusHandle;
use serde::Deserialize;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// The session cookie's name.
pub const COOKIE: &str = "tolk_console";
/// The largest form the console reads (a search, an export request).
const MAX_FORM: usize = 64 * 1024;

/// One-time sign-in links and the sessions they open, shared by the admin listener (which
/// redeems links) and the control socket (which issues them).
pub struct SignIn {
    sessions: Mutex<sessions::Sessions>,
    /// The console's address as the operator's browser reaches it, e.g.
    /// `http://127.0.0.1:8080/console/` (`admin.console_url`).
    pub base_url: String,
}

impl SignIn {
    pub fn new(base_url: String, limits: sessions::Limits) -> SignIn {
        SignIn {
            sessions: Mutex::new(sessions::Sessions::new(limits)),
            base_url,
        }
    }

    fn table(&self) -> std::sync::MutexGuard<'_, sessions::Sessions> {
        // A panic while holding the lock cannot leave the table half-changed in a way that
        // matters (each change is one insert or remove), so a poisoned lock is used as is.
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new one-time link that opens the console at `next`: the URL and how many
    /// seconds it is good for.
    pub fn issue_link(&self, next: &str) -> std::io::Result<(String, u64)> {
        let token = crate::keys::random_hex(32)?;
        self.table().issue_link(Instant::now(), &token, next);
        let base = self.base_url.trim_end_matches('/');
        Ok((format!("{base}/login?token={token}"), sessions::LINK_LIFETIME.as_secs()))
    }

    /// Opens a session: its id (the cookie) and CSRF token.
    fn open(&self, link: Option<&str>) -> Result<(String, String, String), String> {
        let id = crate::keys::random_hex(32).map_err(|e| e.to_string())?;
        let csrf = crate::keys::random_hex(32).map_err(|e| e.to_string())?;
        let mut table = self.table();
        let next = match link {
            Some(token) => table
                .redeem(Instant::now(), token, &id, &csrf)
                .map_err(|e| e.to_string())?,
            None => {
                table.open(Instant::now(), &id, &csrf);
                "/console/".to_string()
            }
        };
        Ok((id, csrf, next))
    }
}

/// What the dashboard measures capacity against.
#[derive(Debug, Clone, Copy)]
pub struct Capacity {
    /// `sip.max_calls`.
    pub calls: usize,
    /// `flow.max_concurrent`.
    pub flows: usize,
}

/// The console's state.
pub struct Console {
    /// The API state of the admin listener (tokens checked).
    api: Arc<ApiState>,
    templates: minijinja::Environment<'static>,
    samples: Mutex<samples::Samples>,
    metrics: Option<PrometheusHandle>,
    capacity: Capacity,
}

/// Who is asking: a session (with the CSRF token its pages carry) or an admin token.
#[derive(Clone)]
pub(crate) struct Viewer {
    pub csrf: Option<String>,
}

/// The console's templates, embedded; a template that does not parse fails here, so a
/// broken one is caught by the first test that starts the console.
fn templates() -> minijinja::Environment<'static> {
    let mut env = minijinja::Environment::new();
    for (name, text) in [
        ("base.html", include_str!("templates/base.html")),
        ("signin.html", include_str!("templates/signin.html")),
        ("dashboard.html", include_str!("templates/dashboard.html")),
        ("dashboard_live.html", include_str!("templates/dashboard_live.html")),
        ("rooms.html", include_str!("templates/rooms.html")),
        ("rooms_live.html", include_str!("templates/rooms_live.html")),
        ("calls.html", include_str!("templates/calls.html")),
        ("calls_live.html", include_str!("templates/calls_live.html")),
        ("records.html", include_str!("templates/records.html")),
        ("record.html", include_str!("templates/record.html")),
        ("reports.html", include_str!("templates/reports.html")),
        ("privacy.html", include_str!("templates/privacy.html")),
    ] {
        if let Err(e) = env.add_template(name, text) {
            // Embedded text: only a broken build gets here, and every test would show it.
            tracing::error!(template = name, error = %e, "console template does not parse");
        }
    }
    env
}

impl Console {
    pub fn new(api: Arc<ApiState>, metrics: Option<PrometheusHandle>, capacity: Capacity) -> Arc<Console> {
        Arc::new(Console {
            api,
            templates: templates(),
            samples: Mutex::new(samples::Samples::default()),
            metrics,
            capacity,
        })
    }

    /// The dashboard's samples (a poisoned lock is used as is: each change is one push).
    fn samples(&self) -> std::sync::MutexGuard<'_, samples::Samples> {
        self.samples.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes a dashboard sample now from the gateway's `/metrics` text.
    fn sample(&self) {
        let Some(m) = &self.metrics else { return };
        let mut text = m.render();
        crate::room::scheduler::render_metrics(&mut text);
        let at = crate::clock::now_micros() / 1_000_000;
        self.samples().push(at, &text);
    }

    /// Renders `template` with `ctx` (plus the viewer's CSRF token), or a 500 page that
    /// says which template failed.
    fn render(&self, template: &str, viewer: &Viewer, ctx: minijinja::Value) -> Response {
        let ctx = minijinja::context! { csrf => viewer.csrf.clone().unwrap_or_default(), ..ctx };
        match self.templates.get_template(template).and_then(|t| t.render(ctx)) {
            Ok(html) => Html(html).into_response(),
            Err(e) => {
                tracing::error!(template, error = %e, "console page failed to render");
                (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("the console page `{template}` failed to render: {e}\n"),
                )
                    .into_response()
            }
        }
    }
}

/// The `/console` routes, and the sampler that keeps the dashboard's history.
pub fn routes(console: Arc<Console>) -> Router {
    let sampler = Arc::downgrade(&console);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(samples::INTERVAL);
        loop {
            every.tick().await;
            match sampler.upgrade() {
                Some(c) => c.sample(),
                None => break,
            }
        }
    });
    // The same API, already authorised: the guard below has checked the session or token.
    let trusted = Arc::new(ApiState {
        control_socket: true,
        ..(*console.api).clone()
    });
    let guarded = Router::new()
        .route("/console/", get(pages::dashboard))
        .route("/console/dashboard/live", get(pages::dashboard_live))
        .route("/console/rooms", get(pages::rooms))
        .route("/console/rooms/live", get(pages::rooms_live))
        .route(
            "/console/rooms/events",
            get(|State(c): State<Arc<Console>>| async move { api::room_event_stream(&c.api.rooms, false) }),
        )
        .route("/console/calls", get(pages::calls))
        .route("/console/calls/live", get(pages::calls_live))
        .route("/console/records", get(pages::records).post(pages::search_records))
        .route("/console/records.csv", post(pages::records_csv))
        .route("/console/records/{id}", get(pages::record))
        .route("/console/reports", get(pages::reports))
        .route("/console/privacy", get(pages::privacy))
        .route("/console/privacy/export", post(pages::subject_export))
        .route("/console/signout", post(sign_out))
        .with_state(console.clone())
        .nest("/console", api::routes(trusted))
        .layer(axum::middleware::from_fn_with_state(console.clone(), guard));
    Router::new()
        .route("/console", get(|| async { redirect("/console/") }))
        .route("/console/login", get(login))
        .route("/console/signin", post(sign_in_with_token))
        .route("/console/assets/{file}", get(asset))
        .with_state(console)
        .merge(guarded)
        .layer(axum::middleware::from_fn(security_headers))
}

/// Headers on every console response: no caching of pages with personal data, no
/// framing, no referrer (the sign-in link must not leak), scripts and styles from the
/// console only.
async fn security_headers(req: Request, next: Next) -> Response {
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    for (name, value) in [
        ("cache-control", "no-store"),
        ("referrer-policy", "no-referrer"),
        ("x-frame-options", "DENY"),
        ("x-content-type-options", "nosniff"),
        (
            "content-security-policy",
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'",
        ),
    ] {
        h.insert(name, HeaderValue::from_static(value));
    }
    res
}

fn redirect(to: &str) -> Response {
    (StatusCode::SEE_OTHER, [(header::LOCATION, to.to_string())]).into_response()
}

/// The session id from the `Cookie` header.
fn session_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|kv| kv.trim().strip_prefix(COOKIE).and_then(|r| r.strip_prefix('=')))
        .map(str::to_string)
}

/// A request from another site (only browsers send the header; absent means not a browser
/// fetch, or an old one, and the CSRF token decides).
fn cross_site(headers: &HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site" || v == "same-site")
}

/// Lets in a signed-in browser or an admin token; checks the CSRF token of every change
/// a cookie asks for.
async fn guard(State(c): State<Arc<Console>>, req: Request, next: Next) -> Response {
    let (mut parts, body) = req.into_parts();
    let session = session_cookie(&parts.headers).and_then(|id| c.api.sign_in.table().check(Instant::now(), &id));
    let token = api::token_ok(&c.api, &parts.headers);
    let api_path = parts.uri.path().starts_with("/console/api/");
    if session.is_none() && !token {
        if api_path {
            return (
                StatusCode::UNAUTHORIZED,
                axum::Json(serde_json::json!({ "error": "sign in to the console first (tolk console url)" })),
            )
                .into_response();
        }
        return sign_in_page(&c, StatusCode::UNAUTHORIZED, None);
    }
    let changes = !matches!(parts.method, Method::GET | Method::HEAD);
    let mut body = body;
    if let (Some(s), true, false) = (&session, changes, token) {
        if cross_site(&parts.headers) {
            return (StatusCode::FORBIDDEN, "refused: this request came from another site\n").into_response();
        }
        let header_token = parts.headers.get("x-csrf-token").and_then(|v| v.to_str().ok());
        let ok = match header_token {
            Some(t) => crate::keys::same_secret(t, &s.csrf),
            None => {
                // A plain form: its `csrf` field.
                let bytes = match axum::body::to_bytes(body, MAX_FORM).await {
                    Ok(b) => b,
                    Err(_) => return (StatusCode::PAYLOAD_TOO_LARGE, "form too large\n").into_response(),
                };
                let field = form_field(&bytes, "csrf");
                body = Body::from(bytes);
                field.is_some_and(|t| crate::keys::same_secret(&t, &s.csrf))
            }
        };
        if !ok {
            return (
                StatusCode::FORBIDDEN,
                "refused: missing or wrong CSRF token (reload the page and try again)\n",
            )
                .into_response();
        }
    }
    parts.extensions.insert(Viewer {
        csrf: session.map(|s| s.csrf),
    });
    next.run(Request::from_parts(parts, body)).await
}

/// One field of an `application/x-www-form-urlencoded` body.
fn form_field(body: &[u8], name: &str) -> Option<String> {
    // The decoder axum's `Form` uses, so the guard and the handler read a form alike.
    let fields: Vec<(String, String)> = serde_urlencoded::from_bytes(body).unwrap_or_default();
    fields.into_iter().find(|(k, _)| k == name).map(|(_, v)| v)
}

fn sign_in_page(c: &Console, status: StatusCode, message: Option<String>) -> Response {
    let mut page = c.render(
        "signin.html",
        &Viewer { csrf: None },
        minijinja::context! { message => message, tokens => !c.api.tokens.is_empty() },
    );
    *page.status_mut() = status;
    page
}

/// `Set-Cookie` for a new session.
fn session_cookie_header(id: &str) -> String {
    format!(
        "{COOKIE}={id}; Path=/console; HttpOnly; SameSite=Strict; Max-Age={}",
        sessions::Limits::default().absolute.as_secs()
    )
}

#[derive(Deserialize)]
struct LoginQuery {
    token: Option<String>,
}

/// `GET /console/login?token=...`: redeems a one-time link. The answer is a page that
/// moves on by itself (not a redirect): the cookie is then sent to the next page even when
/// the link was opened from another site, as `SameSite=Strict` would otherwise stop.
async fn login(State(c): State<Arc<Console>>, Query(q): Query<LoginQuery>) -> Response {
    let Some(token) = q.token else {
        return sign_in_page(&c, StatusCode::OK, None);
    };
    match c.api.sign_in.open(Some(&token)) {
        Ok((id, _csrf, next)) => {
            tracing::info!("console: signed in with a one-time link");
            let page = format!(
                "<!doctype html><meta charset=utf-8><meta http-equiv=refresh content=\"0;url={next}\">\
                 <title>tolk console</title><p>Signed in. <a href=\"{next}\">Continue</a></p>"
            );
            ([(header::SET_COOKIE, session_cookie_header(&id))], Html(page)).into_response()
        }
        Err(message) => sign_in_page(&c, StatusCode::UNAUTHORIZED, Some(message)),
    }
}

#[derive(Deserialize)]
struct TokenForm {
    token: String,
}

/// `POST /console/signin` with an admin token typed into the sign-in form.
async fn sign_in_with_token(State(c): State<Arc<Console>>, headers: HeaderMap, Form(f): Form<TokenForm>) -> Response {
    if cross_site(&headers) {
        return (StatusCode::FORBIDDEN, "refused: this request came from another site\n").into_response();
    }
    if !api::token_listed(&c.api, f.token.trim()) {
        return sign_in_page(
            &c,
            StatusCode::UNAUTHORIZED,
            Some("that is not one of admin.tokens".into()),
        );
    }
    match c.api.sign_in.open(None) {
        Ok((id, _, next)) => {
            let mut res = redirect(&next);
            if let Ok(v) = HeaderValue::from_str(&session_cookie_header(&id)) {
                res.headers_mut().insert(header::SET_COOKIE, v);
            }
            res
        }
        Err(e) => sign_in_page(&c, StatusCode::INTERNAL_SERVER_ERROR, Some(e)),
    }
}

/// `POST /console/signout`.
async fn sign_out(headers: HeaderMap, State(c): State<Arc<Console>>) -> Response {
    if let Some(id) = session_cookie(&headers) {
        c.api.sign_in.table().close(&id);
    }
    let mut res = redirect("/console/login");
    res.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("tolk_console=; Path=/console; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    res
}

/// `GET /console/assets/{file}`: the embedded stylesheet and script.
async fn asset(axum::extract::Path(file): axum::extract::Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "console.css" => (include_str!("assets/console.css"), "text/css; charset=utf-8"),
        "console.js" => (include_str!("assets/console.js"), "text/javascript; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset\n").into_response(),
    };
    ([(header::CONTENT_TYPE, kind)], body).into_response()
}
