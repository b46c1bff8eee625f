//! Reading CDRs: lists, subject-access exports and reports, for the CLI and the admin API.
//! PostgreSQL builds the JSON (`json_build_object`), so timestamps come out as ISO 8601 text
//! and nothing here needs a calendar crate. Numbers are never shown in clear: callers are
//! masked, and a number given as a filter is turned into its pseudonym first.

use sqlx::PgPool;

/// Errors from queries.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    #[error("{0}")]
    Invalid(String),
}

/// Filters for [`list`].
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// `started_at >= from` (any PostgreSQL timestamptz text: `2026-11-01`, ...).
    pub from: Option<String>,
    pub to: Option<String>,
    /// Calls from this caller (by their pseudonyms: the gateway's and each tenant's).
    pub caller_pseudonyms: Option<Vec<String>>,
    pub dialled: Option<String>,
    pub tenant: Option<String>,
    pub disposition: Option<String>,
    /// Calls that were in this room.
    pub room: Option<String>,
    pub limit: i64,
    /// Page cursor: the `cursor` of the last record of the previous page.
    pub after: Option<String>,
}

/// The fields of a listed record (the `tolk cdr list --format json` contract).
const RECORD_JSON: &str = "json_build_object(\
    'id', id, 'call_id', sip_call_id, 'caller', coalesce(caller_masked, 'anonymous'), \
    'dialled', dialled, 'dialled_kind', dialled_kind, 'tenant', tenant, 'trunk', trunk, \
    'started_at', started_at, 'answered_at', answered_at, 'ended_at', ended_at, \
    'duration_ms', duration_ms, 'billable_ms', billable_ms, 'disposition', disposition, \
    'sip_status', sip_status, 'q850_cause', q850_cause, 'hangup_by', hangup_by, 'flow', flow, \
    'room', room, 'role', role, 'language', language, 'codec', codec, 'mos', round(mos::numeric, 2), \
    'jitter_ms', round(jitter_ms::numeric, 1), 'packets_lost', packets_lost, 'consent', consent, \
    'tags', tags, 'retention_class', retention_class, 'expires_at', expires_at, \
    'legal_hold', legal_hold, 'anonymised_at', anonymised_at, \
    'cursor', to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US') || '/' || id)";

/// Records matching `f`, oldest first, at most `f.limit` (1..=10000).
pub async fn list(pool: &PgPool, f: &ListFilter) -> Result<Vec<serde_json::Value>, QueryError> {
    let limit = f.limit.clamp(1, 10_000);
    let (after_ts, after_id) = match f.after.as_deref() {
        Some(c) => {
            let (ts, id) = c
                .split_once('/')
                .ok_or_else(|| QueryError::Invalid(format!("`{c}` is not a cursor from a previous page")))?;
            let id: uuid::Uuid = id
                .parse()
                .map_err(|_| QueryError::Invalid(format!("`{c}` is not a cursor from a previous page")))?;
            (Some(format!("{ts}Z")), Some(id))
        }
        None => (None, None),
    };
    let sql = format!(
        "SELECT {RECORD_JSON}::text FROM calls \
         WHERE ($1::timestamptz IS NULL OR started_at >= $1::timestamptz) \
           AND ($2::timestamptz IS NULL OR started_at < $2::timestamptz) \
           AND ($3::text[] IS NULL OR caller_pseudonym = ANY($3)) \
           AND ($4::text IS NULL OR dialled = $4) \
           AND ($5::text IS NULL OR tenant = $5) \
           AND ($6::text IS NULL OR disposition = $6) \
           AND ($7::timestamptz IS NULL OR (started_at, id) > ($7::timestamptz, $8::uuid)) \
           AND ($10::text IS NULL OR room = $10) \
         ORDER BY started_at, id LIMIT $9"
    );
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(&f.from)
        .bind(&f.to)
        .bind(&f.caller_pseudonyms)
        .bind(&f.dialled)
        .bind(&f.tenant)
        .bind(&f.disposition)
        .bind(after_ts)
        .bind(after_id)
        .bind(limit)
        .bind(&f.room)
        .fetch_all(pool)
        .await?;
    Ok(json_rows(rows))
}

/// One record with its events in order (the console's timeline of a call); None when
/// there is no such record. The caller is masked as in [`list`].
pub async fn record_with_events(pool: &PgPool, id: uuid::Uuid) -> Result<Option<serde_json::Value>, QueryError> {
    let sql = format!(
        "SELECT (({RECORD_JSON})::jsonb || jsonb_build_object('events', coalesce((\
             SELECT json_agg(json_build_object('at', e.at, 'kind', e.kind, 'detail', e.detail) ORDER BY e.at) \
             FROM call_events e WHERE e.call_id = calls.id), '[]'::json)))::text \
         FROM calls WHERE id = $1"
    );
    let row: Option<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(id)
        .fetch_optional(pool)
        .await?;
    Ok(row.and_then(|(t,)| serde_json::from_str(&t).ok()))
}

/// Calls, answered calls and the mean billable seconds of answered calls that started in the
/// last `minutes`, and the same per `bucket_minutes` bucket (oldest first, empty buckets
/// included): the dashboard's ASR and ACD and its charts.
pub async fn recent_activity(
    pool: &PgPool,
    minutes: i32,
    bucket_minutes: i32,
) -> Result<serde_json::Value, QueryError> {
    let sql = "WITH b AS (SELECT generate_series(0, ($1 / $2) - 1) AS i), \
         c AS (SELECT floor(extract(epoch FROM (started_at - (now() - make_interval(mins => $1)))) / ($2 * 60))::int AS i, \
                      answered_at IS NOT NULL AS answered, billable_ms \
               FROM calls WHERE started_at >= now() - make_interval(mins => $1)) \
         SELECT json_build_object( \
           'calls', (SELECT count(*) FROM c), \
           'answered', (SELECT count(*) FROM c WHERE answered), \
           'acd_seconds', (SELECT round(avg(billable_ms) / 1000.0, 1) FROM c WHERE answered), \
           'buckets', (SELECT json_agg(json_build_object( \
               'start', to_char((now() - make_interval(mins => $1) + make_interval(mins => b.i * $2)) AT TIME ZONE 'UTC', 'HH24:MI'), \
               'calls', (SELECT count(*) FROM c WHERE c.i = b.i), \
               'answered', (SELECT count(*) FROM c WHERE c.i = b.i AND answered)) ORDER BY b.i) FROM b))::text";
    let (text,): (String,) = sqlx::query_as(sql)
        .bind(minutes.max(1))
        .bind(bucket_minutes.clamp(1, minutes.max(1)))
        .fetch_one(pool)
        .await?;
    serde_json::from_str(&text).map_err(|e| QueryError::Invalid(e.to_string()))
}

/// A timestamp PostgreSQL could not read is the caller's mistake, not a database failure.
pub(crate) fn time_error(e: sqlx::Error, given: Option<&str>) -> QueryError {
    match (&e, given) {
        (sqlx::Error::Database(d), Some(t)) if d.code().is_some_and(|c| c.starts_with("22")) => {
            QueryError::Invalid(format!("`{t}` is not a time (2026-12-01, 2026-12-01T09:30Z)"))
        }
        _ => QueryError::Db(e),
    }
}

/// Rows of one JSON text column (built by PostgreSQL's `json_build_object`), parsed.
pub(crate) fn json_rows(rows: Vec<(String,)>) -> Vec<serde_json::Value> {
    rows.into_iter()
        .filter_map(|(t,)| serde_json::from_str(&t).ok())
        .collect()
}

/// Everything held about a caller (a subject access request): their calls with events,
/// recordings and opt-outs. The number itself is not in it (it is what the requester gave).
pub async fn export_subject(pool: &PgPool, pseudonyms: &[String]) -> Result<serde_json::Value, QueryError> {
    let sql = format!(
        "SELECT json_build_object(\
           'calls', coalesce((SELECT json_agg(r ORDER BY (r->>'started_at')) FROM (\
               SELECT ({RECORD_JSON})::jsonb || jsonb_build_object('events', coalesce((\
                   SELECT json_agg(json_build_object('at', e.at, 'kind', e.kind, 'detail', e.detail) ORDER BY e.at) \
                   FROM call_events e WHERE e.call_id = calls.id), '[]'::json)) AS r \
               FROM calls WHERE caller_pseudonym = ANY($1)) x), '[]'::json), \
           'recordings', coalesce((SELECT json_agg(json_build_object('id', id, 'call_id', call_id, 'started_at', started_at, \
               'seconds', seconds, 'format', format) ORDER BY started_at) FROM recordings \
               WHERE caller_pseudonym = ANY($1) AND deleted_at IS NULL), '[]'::json), \
           'room_recordings', coalesce((SELECT json_agg(json_build_object('id', r.id, 'room', r.room, \
               'started_at', r.started_at, 'seconds', r.seconds, 'format', r.format) ORDER BY r.started_at) \
               FROM recordings r WHERE r.deleted_at IS NULL AND r.id::text IN (\
                   SELECT e.detail->>'id' FROM call_events e JOIN calls c ON c.id = e.call_id \
                   WHERE c.caller_pseudonym = ANY($1) AND e.kind = 'room_recording' \
                   AND coalesce(e.detail->>'recorded', 'true') <> 'false' \
                   AND coalesce(c.consent->>'record', 'true') <> 'false')), '[]'::json), \
           'opt_outs', coalesce((SELECT json_agg(json_build_object('scope', scope, 'tenant', tenant, 'source', source, 'since', created_at) \
               ORDER BY scope) FROM opt_outs WHERE pseudonym = ANY($1)), '[]'::json))::text"
    );
    let (text,): (String,) = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(pseudonyms)
        .fetch_one(pool)
        .await?;
    serde_json::from_str(&text).map_err(|e| QueryError::Invalid(e.to_string()))
}

/// What a report groups by.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportBy {
    Day,
    Tenant,
    Number,
    Trunk,
    Room,
    Language,
    /// Interpretation rooms: listener minutes per channel, interpreter live minutes per
    /// booth ([`interpretation_report`]).
    Interpretation,
}

impl ReportBy {
    /// The columns of this report's rows, in order.
    pub fn columns(self) -> &'static [&'static str] {
        match self {
            ReportBy::Interpretation => INTERPRETATION_COLUMNS,
            _ => REPORT_COLUMNS,
        }
    }

    pub fn parse(s: &str) -> Result<ReportBy, QueryError> {
        Ok(match s {
            "day" => ReportBy::Day,
            "tenant" => ReportBy::Tenant,
            "number" => ReportBy::Number,
            "trunk" => ReportBy::Trunk,
            "room" => ReportBy::Room,
            "language" => ReportBy::Language,
            "interpretation" => ReportBy::Interpretation,
            other => {
                return Err(QueryError::Invalid(format!(
                    "`{other}`: report by day, tenant, number, trunk, room, language or interpretation"
                )));
            }
        })
    }

    fn key(self) -> &'static str {
        match self {
            ReportBy::Day => "to_char(started_at AT TIME ZONE 'UTC', 'YYYY-MM-DD')",
            ReportBy::Tenant => "coalesce(tenant, '-')",
            // The dialled number (ours, not a caller's).
            ReportBy::Number => "dialled",
            ReportBy::Trunk => "coalesce(trunk, '-')",
            ReportBy::Room => "coalesce(room, '-')",
            ReportBy::Language => "coalesce(language, '-')",
            ReportBy::Interpretation => "coalesce(room, '-')",
        }
    }
}

/// Per group: calls, answered, answer-seizure ratio (%), total and average billable minutes,
/// peak concurrency (calls up at the same instant, from start to end), mean MOS and loss.
pub async fn report(
    pool: &PgPool,
    by: ReportBy,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<serde_json::Value>, QueryError> {
    if by == ReportBy::Interpretation {
        return interpretation_report(pool, from, to).await;
    }
    let key = by.key();
    let sql = format!(
        "WITH c AS (SELECT {key} AS key, * FROM calls \
             WHERE ($1::timestamptz IS NULL OR started_at >= $1::timestamptz) \
               AND ($2::timestamptz IS NULL OR started_at < $2::timestamptz)), \
         g AS (SELECT key, count(*) AS calls, \
               count(*) FILTER (WHERE answered_at IS NOT NULL) AS answered, \
               round(100.0 * count(*) FILTER (WHERE answered_at IS NOT NULL) / count(*), 1) AS asr_percent, \
               round(coalesce(sum(billable_ms), 0) / 60000.0, 2) AS billable_minutes, \
               round(avg(billable_ms) FILTER (WHERE answered_at IS NOT NULL) / 60000.0, 2) AS avg_billable_minutes, \
               round(avg(mos)::numeric, 2) AS avg_mos, \
               round((100.0 * sum(greatest(packets_lost, 0)) / nullif(sum(packets_received + greatest(packets_lost, 0)), 0))::numeric, 2) AS loss_percent \
             FROM c GROUP BY key), \
         e AS (SELECT key, started_at AS t, 1 AS d FROM c \
               UNION ALL SELECT key, coalesce(ended_at, now()), -1 FROM c), \
         p AS (SELECT key, max(n) AS peak_concurrency FROM \
               (SELECT key, sum(d) OVER (PARTITION BY key ORDER BY t, d ROWS UNBOUNDED PRECEDING) AS n FROM e) s \
               GROUP BY key) \
         SELECT json_build_object('key', g.key, 'calls', calls, 'answered', answered, 'asr_percent', asr_percent, \
           'billable_minutes', billable_minutes, 'avg_billable_minutes', avg_billable_minutes, \
           'peak_concurrency', peak_concurrency, 'avg_mos', avg_mos, 'loss_percent', loss_percent)::text \
         FROM g JOIN p USING (key) ORDER BY g.key"
    );
    let rows: Vec<(String,)> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(from)
        .bind(to)
        .fetch_all(pool)
        .await?;
    Ok(json_rows(rows))
}

/// Interpretation rooms, per room: listener minutes per channel (`who` = "listener",
/// `channel` 0 = the floor; a listener starts on the floor and each `channel_chosen` event
/// moves it) and interpreter live minutes per booth (`who` = "interpreter", `channel` = the
/// booth; `interpreter_live` to `interpreter_off`, or to its leaving or the call's end),
/// with how many calls took part (a choice made the instant it joined gives no floor
/// span). `language` is the name the events recorded (the room's at the time; "floor"
/// for channel 0 when no choice named it; one of them if a name changed). Calls that
/// started in [from, to).
pub async fn interpretation_report(
    pool: &PgPool,
    from: Option<&str>,
    to: Option<&str>,
) -> Result<Vec<serde_json::Value>, QueryError> {
    let sql = "WITH ev AS (SELECT e.call_id, c.room, c.role, e.at, e.kind, e.detail,                  coalesce(c.ended_at, now()) AS call_end                FROM call_events e JOIN calls c ON c.id = e.call_id                WHERE c.room IS NOT NULL                  AND ($1::timestamptz IS NULL OR c.started_at >= $1::timestamptz)                  AND ($2::timestamptz IS NULL OR c.started_at < $2::timestamptz)                  AND e.kind IN ('joined_room', 'left_room', 'channel_chosen', 'interpreter_live', 'interpreter_off')),          listening AS (SELECT room, call_id, kind, at, call_end,                  CASE WHEN kind = 'channel_chosen' THEN (detail->>'channel')::int ELSE 0 END AS channel,                  CASE WHEN kind = 'channel_chosen' THEN detail->>'language' END AS language,                  lead(at) OVER (PARTITION BY call_id ORDER BY at, kind = 'joined_room' DESC) AS next_at                FROM ev WHERE role = 'listener' AND kind IN ('joined_room', 'left_room', 'channel_chosen')),          live AS (SELECT room, call_id, kind, at, call_end, (detail->>'booth')::int AS channel, detail->>'language' AS language,                  lead(at) OVER (PARTITION BY call_id ORDER BY at) AS next_at                FROM ev WHERE kind IN ('interpreter_live', 'interpreter_off', 'left_room')),          spans AS (SELECT room, 'listener' AS who, channel, language, call_id,                  least(coalesce(next_at, call_end), call_end) - at AS span                FROM listening WHERE kind <> 'left_room'              UNION ALL SELECT room, 'interpreter', channel, language, call_id,                  least(coalesce(next_at, call_end), call_end) - at                FROM live WHERE kind = 'interpreter_live')          SELECT json_build_object('room', room, 'who', who, 'channel', channel,            'language', coalesce(max(language), CASE WHEN channel = 0 THEN 'floor' END), 'minutes', round((extract(epoch FROM sum(span)) / 60.0)::numeric, 2),            'calls', count(DISTINCT call_id))::text          FROM spans WHERE span > interval '0 seconds' GROUP BY room, who, channel ORDER BY room, who, channel";
    let rows: Vec<(String,)> = sqlx::query_as(sql).bind(from).bind(to).fetch_all(pool).await?;
    Ok(json_rows(rows))
}

/// The interpretation report's columns, in order.
pub const INTERPRETATION_COLUMNS: &[&str] = &["room", "who", "channel", "language", "minutes", "calls"];

/// Renders JSON objects as an aligned text table or CSV, columns in the objects' order
/// (`json_build_object` keeps it; serde_json's map is sorted, so the order is given).
pub fn render(rows: &[serde_json::Value], columns: &[&str], csv: bool) -> String {
    let cell = |v: Option<&serde_json::Value>| match v {
        None | Some(serde_json::Value::Null) => String::new(),
        Some(serde_json::Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| columns.iter().map(|c| cell(r.get(*c))).collect())
        .collect();
    let mut out = String::new();
    if csv {
        let quote = |s: &str| {
            if s.contains([',', '"', '\n']) {
                format!("\"{}\"", s.replace('"', "\"\""))
            } else {
                s.to_string()
            }
        };
        out.push_str(&columns.join(","));
        out.push('\n');
        for row in table {
            out.push_str(&row.iter().map(|c| quote(c)).collect::<Vec<_>>().join(","));
            out.push('\n');
        }
        return out;
    }
    let widths: Vec<usize> = columns
        .iter()
        .enumerate()
        .map(|(i, c)| table.iter().map(|r| r[i].len()).max().unwrap_or(0).max(c.len()))
        .collect();
    let line = |cells: Vec<&str>| {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect::<Vec<_>>()
            .join("  ")
            .trim_end()
            .to_string()
    };
    out.push_str(&line(columns.to_vec()));
    out.push('\n');
    for row in &table {
        out.push_str(&line(row.iter().map(String::as_str).collect()));
        out.push('\n');
    }
    out
}

/// The report's columns, in order.
pub const REPORT_COLUMNS: &[&str] = &[
    "key",
    "calls",
    "answered",
    "asr_percent",
    "billable_minutes",
    "avg_billable_minutes",
    "peak_concurrency",
    "avg_mos",
    "loss_percent",
];

/// The list's columns for table and CSV output.
pub const LIST_COLUMNS: &[&str] = &[
    "id",
    "started_at",
    "caller",
    "dialled",
    "disposition",
    "sip_status",
    "billable_ms",
    "flow",
    "room",
    "codec",
    "mos",
    "retention_class",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_and_csv_render_in_column_order() {
        let rows = vec![
            serde_json::json!({"key": "a", "calls": 3, "note": "x,y"}),
            serde_json::json!({"key": "bb", "calls": null, "note": "say \"hi\""}),
        ];
        assert_eq!(
            render(&rows, &["key", "calls", "note"], false),
            "key  calls  note\na    3      x,y\nbb          say \"hi\"\n"
        );
        assert_eq!(
            render(&rows, &["key", "calls", "note"], true),
            "key,calls,note\na,3,\"x,y\"\nbb,,\"say \"\"hi\"\"\"\n"
        );
    }

    #[test]
    fn report_keys_are_checked() {
        assert_eq!(ReportBy::parse("day").unwrap(), ReportBy::Day);
        assert!(ReportBy::parse("caller").is_err());
    }
}
