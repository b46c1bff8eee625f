//! The console's pages: what each shows, read from the rooms, the call controller, the
//! dashboard samples and the CDR database, handed to its template. Callers are masked
//! everywhere (the rooms and the CDR queries give nothing else).

use super::{Console, Viewer, charts, samples::Sample};
use crate::admin::api::{self, CallsRequest};
use crate::cdr::query::{self, ListFilter, ReportBy};
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Form};
use minijinja::Value;
use serde::Deserialize;
use std::sync::Arc;

type Shared = State<Arc<Console>>;

/// Records per page of the records list.
const PAGE: i64 = 50;

/// `HH:MM` (UTC) of Unix seconds.
fn clock_label(unix: i64) -> String {
    let day = unix.rem_euclid(86_400);
    format!("{:02}:{:02}", day / 3600, day % 3600 / 60)
}

/// `YYYY-MM-DDTHH:MMZ` of Unix seconds (Howard Hinnant's days-to-civil algorithm).
pub(super) fn iso_minute(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}-{m:02}-{d:02}T{}Z", clock_label(unix))
}

fn f(v: &serde_json::Value) -> f64 {
    v.as_f64()
        .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        .unwrap_or(f64::NAN)
}

/// A page that could not be made, with the reason (a database error, a wrong filter).
fn problem(c: &Console, viewer: &Viewer, template: &str, message: String) -> Response {
    c.render(template, viewer, minijinja::context! { error => message })
}

// ---- dashboard ----

pub(super) async fn dashboard(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = dashboard_context(&c).await;
    c.render("dashboard.html", &v, ctx)
}

pub(super) async fn dashboard_live(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = dashboard_context(&c).await;
    c.render("dashboard_live.html", &v, ctx)
}

async fn dashboard_context(c: &Console) -> Value {
    if c.samples.lock().unwrap_or_else(|e| e.into_inner()).latest().is_none() {
        c.sample();
    }
    let history: Vec<Sample> = c
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .all()
        .copied()
        .collect();
    let latest = history.last().copied();
    let labels: Vec<String> = history.iter().map(|s| clock_label(s.at)).collect();
    let series = |pick: fn(&Sample) -> f64| history.iter().map(pick).collect::<Vec<f64>>();
    let mut charts_html = vec![
        charts::lines(
            "Active calls and flows",
            "",
            &labels,
            &[("calls", series(|s| s.active_calls)), ("flows", series(|s| s.flows))],
        ),
        charts::lines(
            "Mixer tick lateness, p99",
            " ms",
            &labels,
            &[("p99", series(|s| s.tick_lateness_p99_ms))],
        ),
        charts::lines(
            "CDR writer lag",
            " s",
            &labels,
            &[("lag", series(|s| s.cdr_lag_seconds))],
        ),
    ];
    let (mut hour, mut error) = (serde_json::Value::Null, None);
    if let Some(cdr) = &c.api.cdr {
        match tokio::try_join!(
            query::recent_activity(&cdr.pool, 60, 60),
            query::recent_activity(&cdr.pool, 360, 15)
        ) {
            Ok((h, six)) => {
                let buckets = six["buckets"].as_array().cloned().unwrap_or_default();
                let labels: Vec<String> = buckets
                    .iter()
                    .map(|b| b["start"].as_str().unwrap_or("").to_string())
                    .collect();
                let calls: Vec<f64> = buckets.iter().map(|b| f(&b["calls"])).collect();
                let answered: Vec<f64> = buckets.iter().map(|b| f(&b["answered"])).collect();
                let asr: Vec<f64> = calls
                    .iter()
                    .zip(&answered)
                    .map(|(c, a)| if *c > 0.0 { 100.0 * a / c } else { f64::NAN })
                    .collect();
                charts_html.insert(
                    0,
                    charts::lines(
                        "Calls per 15 minutes, last 6 hours",
                        "",
                        &labels,
                        &[("calls", calls), ("answered", answered)],
                    ),
                );
                charts_html.insert(1, charts::lines("ASR per 15 minutes", " %", &labels, &[("ASR", asr)]));
                hour = h;
            }
            Err(e) => error = Some(format!("call records: {e}")),
        }
    }
    let calls = f(&hour["calls"]);
    let answered = f(&hour["answered"]);
    let number = |v: f64, digits: usize| {
        if v.is_finite() {
            format!("{v:.digits$}")
        } else {
            "–".into()
        }
    };
    let asr = if calls > 0.0 {
        format!("{:.1} %", 100.0 * answered / calls)
    } else {
        "–".into()
    };
    let acd = match hour["acd_seconds"].as_f64() {
        Some(s) => format!("{}:{:02}", (s / 60.0) as i64, (s % 60.0) as i64),
        None => "–".into(),
    };
    let l = latest.unwrap_or(Sample {
        at: 0,
        active_calls: f64::NAN,
        flows: f64::NAN,
        rooms: f64::NAN,
        members: f64::NAN,
        calls_per_minute: f64::NAN,
        tick_lateness_p99_ms: f64::NAN,
        cdr_lag_seconds: f64::NAN,
    });
    let cards = vec![
        (
            "Active calls",
            format!("{} / {}", number(l.active_calls, 0), c.capacity.calls),
        ),
        ("Flows", format!("{} / {}", number(l.flows, 0), c.capacity.flows)),
        (
            "Rooms / members",
            format!("{} / {}", number(l.rooms, 0), number(l.members, 0)),
        ),
        ("Calls per minute", number(l.calls_per_minute, 1)),
        ("ASR, last hour", asr),
        ("ACD, last hour", acd),
        ("Tick lateness p99", format!("{} ms", number(l.tick_lateness_p99_ms, 2))),
        ("CDR writer lag", format!("{} s", number(l.cdr_lag_seconds, 2))),
    ];
    minijinja::context! {
        page => "dashboard",
        cards => cards,
        charts => charts_html.into_iter().map(Value::from_safe_string).collect::<Vec<_>>(),
        error => error,
        sampled_at => latest.map(|s| iso_minute(s.at)),
        calls_last_hour => calls,
    }
}

// ---- rooms and calls ----

async fn live_calls(c: &Console) -> Option<Vec<serde_json::Value>> {
    api::ask_calls(&c.api, CallsRequest::List).await
}

pub(super) async fn rooms(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = rooms_context(&c).await;
    c.render("rooms.html", &v, ctx)
}

pub(super) async fn rooms_live(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = rooms_context(&c).await;
    c.render("rooms_live.html", &v, ctx)
}

async fn rooms_context(c: &Console) -> Value {
    let calls = live_calls(c).await.unwrap_or_default();
    // The codec of each member's call, from the call controller.
    let codecs: std::collections::BTreeMap<String, String> = calls
        .iter()
        .filter_map(|k| Some((k["call"].as_u64()?.to_string(), k["codec"].as_str()?.to_string())))
        .collect();
    let now = crate::clock::now_micros();
    let rooms: Vec<serde_json::Value> = c
        .api
        .rooms
        .list()
        .into_iter()
        .map(|r| {
            let mut v = serde_json::json!(r);
            if let Some(members) = v["members"].as_array_mut() {
                for m in members {
                    let call = m["call"].as_u64().unwrap_or(0).to_string();
                    m["codec"] = codecs.get(&call).cloned().into();
                    let secs = (now - m["joined_at"].as_i64().unwrap_or(now)).max(0) / 1_000_000;
                    m["in_room"] = format!("{}:{:02}", secs / 60, secs % 60).into();
                }
            }
            v
        })
        .collect();
    minijinja::context! { page => "rooms", rooms => Value::from_serialize(&rooms) }
}

pub(super) async fn calls(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = calls_context(&c).await;
    c.render("calls.html", &v, ctx)
}

pub(super) async fn calls_live(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let ctx = calls_context(&c).await;
    c.render("calls_live.html", &v, ctx)
}

async fn calls_context(c: &Console) -> Value {
    let calls = live_calls(c).await;
    minijinja::context! {
        page => "calls",
        answered => calls.is_some(),
        calls => Value::from_serialize(calls.unwrap_or_default()),
    }
}

// ---- call records ----

/// The records search form. `number` comes only in a POST body, never in a URL.
#[derive(Deserialize, Default, Debug)]
pub(super) struct RecordSearch {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    number: String,
    #[serde(default)]
    dialled: String,
    #[serde(default)]
    tenant: String,
    #[serde(default)]
    disposition: String,
    #[serde(default)]
    room: String,
    #[serde(default)]
    after: String,
}

fn given(s: &str) -> Option<String> {
    let s = s.trim();
    (!s.is_empty()).then(|| s.to_string())
}

impl RecordSearch {
    async fn filter(&self, c: &Console, limit: i64) -> Result<ListFilter, String> {
        let cdr = c.api.cdr.as_ref().ok_or("CDRs are disabled (cdr.enabled = false)")?;
        let caller_pseudonyms = match given(&self.number) {
            Some(n) => {
                let n = crate::number::normalise(&n).ok_or("`number` is not a phone number")?;
                let p = cdr.key.pseudonym(&n);
                Some(
                    crate::cdr::subject::pseudonyms_of(&cdr.pool, &cdr.key, &p)
                        .await
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        Ok(ListFilter {
            from: given(&self.from),
            to: given(&self.to),
            caller_pseudonyms,
            dialled: given(&self.dialled).map(|d| crate::number::normalise(&d).unwrap_or(d)),
            tenant: given(&self.tenant),
            disposition: given(&self.disposition),
            room: given(&self.room),
            limit,
            after: given(&self.after),
        })
    }
}

/// `GET /console/records`: the last day's records (a search with a number is a POST).
pub(super) async fn records(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let from = iso_minute(crate::clock::now_micros() / 1_000_000 - 86_400);
    let search = RecordSearch {
        from,
        ..RecordSearch::default()
    };
    records_page(&c, &v, search).await
}

pub(super) async fn search_records(
    State(c): Shared,
    Extension(v): Extension<Viewer>,
    Form(search): Form<RecordSearch>,
) -> Response {
    records_page(&c, &v, search).await
}

async fn records_page(c: &Console, v: &Viewer, search: RecordSearch) -> Response {
    let rows = list_records(c, &search, PAGE).await;
    let (rows, error) = match rows {
        Ok(r) => (r, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let next = (rows.len() as i64 == PAGE)
        .then(|| rows.last().and_then(|r| r["cursor"].as_str().map(str::to_string)))
        .flatten();
    c.render(
        "records.html",
        v,
        minijinja::context! {
            page => "records",
            records => Value::from_serialize(&rows),
            error => error,
            next => next,
            form => minijinja::context! {
                from => search.from, to => search.to, number => search.number, dialled => search.dialled,
                tenant => search.tenant, disposition => search.disposition, room => search.room,
            },
        },
    )
}

/// The records a search finds, or why not.
async fn list_records(c: &Console, search: &RecordSearch, limit: i64) -> Result<Vec<serde_json::Value>, String> {
    let filter = search.filter(c, limit).await?;
    let cdr = c.api.cdr.as_ref().ok_or("CDRs are disabled (cdr.enabled = false)")?;
    query::list(&cdr.pool, &filter).await.map_err(|e| e.to_string())
}

/// `POST /console/records.csv`: the search's records (up to 10,000) as CSV.
pub(super) async fn records_csv(State(c): Shared, Form(search): Form<RecordSearch>) -> Response {
    let rows = list_records(&c, &search, 10_000).await;
    match rows {
        Ok(rows) => (
            [
                (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
                (header::CONTENT_DISPOSITION, "attachment; filename=\"tolk-records.csv\""),
            ],
            query::render(&rows, query::LIST_COLUMNS, true),
        )
            .into_response(),
        Err(e) => (StatusCode::BAD_REQUEST, format!("{e}\n")).into_response(),
    }
}

/// `GET /console/records/{id}`: one record and the timeline of its events.
pub(super) async fn record(State(c): Shared, Extension(v): Extension<Viewer>, Path(id): Path<String>) -> Response {
    let Some(cdr) = &c.api.cdr else {
        return problem(&c, &v, "record.html", "CDRs are disabled (cdr.enabled = false)".into());
    };
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return problem(&c, &v, "record.html", format!("`{id}` is not a record id"));
    };
    match query::record_with_events(&cdr.pool, id).await {
        Ok(Some(r)) => c.render(
            "record.html",
            &v,
            minijinja::context! { page => "records", record => Value::from_serialize(&r) },
        ),
        Ok(None) => {
            let mut page = problem(
                &c,
                &v,
                "record.html",
                "no such record (erased, swept, or never made)".into(),
            );
            *page.status_mut() = StatusCode::NOT_FOUND;
            page
        }
        Err(e) => problem(&c, &v, "record.html", e.to_string()),
    }
}

// ---- reports ----

#[derive(Deserialize)]
pub(super) struct ReportQuery {
    by: Option<String>,
    from: Option<String>,
    to: Option<String>,
}

/// `GET /console/reports?by=day|number|room|language|tenant|trunk|interpretation`.
pub(super) async fn reports(
    State(c): Shared,
    Extension(v): Extension<Viewer>,
    Query(q): Query<ReportQuery>,
) -> Response {
    let by_name = q.by.clone().unwrap_or_else(|| "day".into());
    let from = q.from.clone().filter(|s| !s.trim().is_empty());
    let to = q.to.clone().filter(|s| !s.trim().is_empty());
    let ctx = |rows: Vec<serde_json::Value>, columns: &[&str], charts_html: Vec<String>, error: Option<String>| {
        minijinja::context! {
            page => "reports",
            by => by_name.clone(),
            from => from.clone().unwrap_or_default(),
            to => to.clone().unwrap_or_default(),
            choices => ["day", "number", "room", "language", "tenant", "trunk", "interpretation"],
            columns => columns.to_vec(),
            rows => Value::from_serialize(&rows),
            charts => charts_html.into_iter().map(Value::from_safe_string).collect::<Vec<_>>(),
            error => error,
        }
    };
    let Some(cdr) = &c.api.cdr else {
        return c.render(
            "reports.html",
            &v,
            ctx(vec![], &[], vec![], Some("CDRs are disabled".into())),
        );
    };
    let by = match ReportBy::parse(&by_name) {
        Ok(b) => b,
        Err(e) => return c.render("reports.html", &v, ctx(vec![], &[], vec![], Some(e.to_string()))),
    };
    match query::report(&cdr.pool, by, from.as_deref(), to.as_deref()).await {
        Ok(rows) => {
            let charts_html = if by == ReportBy::Interpretation {
                let minutes: Vec<(String, f64)> = rows
                    .iter()
                    .map(|r| {
                        let lang = r["language"].as_str().unwrap_or("?");
                        (
                            format!(
                                "{} {} {}",
                                r["room"].as_str().unwrap_or("-"),
                                r["who"].as_str().unwrap_or(""),
                                lang
                            ),
                            f(&r["minutes"]),
                        )
                    })
                    .collect();
                vec![charts::bars("Minutes per room, role and channel", "", &minutes)]
            } else {
                let bars_of = |field: &str| -> Vec<(String, f64)> {
                    rows.iter()
                        .map(|r| (r["key"].as_str().unwrap_or("-").to_string(), f(&r[field])))
                        .collect()
                };
                vec![
                    charts::bars(&format!("Calls by {by_name}"), "", &bars_of("calls")),
                    charts::bars(
                        &format!("Billable minutes by {by_name}"),
                        "",
                        &bars_of("billable_minutes"),
                    ),
                    charts::bars(&format!("ASR by {by_name}"), " %", &bars_of("asr_percent")),
                ]
            };
            c.render("reports.html", &v, ctx(rows, by.columns(), charts_html, None))
        }
        Err(e) => c.render("reports.html", &v, ctx(vec![], &[], vec![], Some(e.to_string()))),
    }
}

// ---- privacy ----

/// `GET /console/privacy`: opt-outs, open subject requests with their due dates, and the
/// forms for export, opt-out and erasure.
pub(super) async fn privacy(State(c): Shared, Extension(v): Extension<Viewer>) -> Response {
    let Some(cdr) = &c.api.cdr else {
        return problem(&c, &v, "privacy.html", "CDRs are disabled (cdr.enabled = false)".into());
    };
    let opt_outs = crate::cdr::subject::list_opt_outs(&cdr.pool).await;
    let requests = async {
        let mut conn = cdr.pool.acquire().await.map_err(query::QueryError::Db)?;
        crate::cdr::requests::list(&mut conn, false, None).await
    }
    .await;
    match (opt_outs, requests) {
        (Ok(o), Ok(r)) => c.render(
            "privacy.html",
            &v,
            minijinja::context! {
                page => "privacy",
                opt_outs => Value::from_serialize(&o),
                requests => Value::from_serialize(&r),
            },
        ),
        (Err(e), _) | (_, Err(e)) => problem(&c, &v, "privacy.html", e.to_string()),
    }
}

#[derive(Deserialize)]
pub(super) struct ExportForm {
    number: String,
}

/// `POST /console/privacy/export`: a subject access export, downloaded as JSON (and
/// entered in the request register, as from the CLI and the API).
pub(super) async fn subject_export(State(c): Shared, Form(form): Form<ExportForm>) -> Response {
    let Some(cdr) = &c.api.cdr else {
        return (StatusCode::SERVICE_UNAVAILABLE, "CDRs are disabled\n").into_response();
    };
    let Some(n) = crate::number::normalise(&form.number) else {
        return (StatusCode::BAD_REQUEST, "`number` is not a phone number\n").into_response();
    };
    let p = cdr.key.pseudonym(&n);
    match crate::cdr::subject::answer_access(&cdr.pool, &cdr.key, &p, "web console", cdr.erasure.due_days).await {
        Ok(export) => (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"subject-export.json\"",
                ),
            ],
            serde_json::to_string_pretty(&export).unwrap_or_default(),
        )
            .into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("{e}\n")).into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_are_written_in_utc() {
        assert_eq!(iso_minute(0), "1970-01-01T00:00Z");
        assert_eq!(iso_minute(1_796_601_600 + 9 * 3600 + 30 * 60), "2026-12-07T09:30Z");
        assert_eq!(iso_minute(951_782_400), "2000-02-29T00:00Z");
        assert_eq!(clock_label(-60), "23:59");
    }
}
