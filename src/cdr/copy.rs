//! PostgreSQL binary COPY encoding of CDR rows (PostgreSQL docs, "COPY", section "Binary
//! Format"): a signature and header, then per row a field count and each field as a length
//! (-1 for NULL) and its binary send representation. Pure: bytes out, no connection.

use super::model::{CallEvent, CallRecord, Micros};
use uuid::Uuid;

/// Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC).
const PG_EPOCH_OFFSET_MICROS: i64 = 946_684_800_000_000;

/// The columns [`encode_call`] writes, in order (the COPY column list).
pub const CALL_COLUMNS: &str = "id, started_at, revision, node, tenant, trunk, direction, caller_pseudonym, \
     caller_masked, caller_number, caller_anonymous, dialled, dialled_kind, sip_call_id, answered_at, \
     ended_at, duration_ms, billable_ms, disposition, sip_status, q850_cause, hangup_by, codec, \
     packets_received, packets_lost, jitter_ms, mos, rtt_ms, flow, room, room_session, role, language, \
     recording_id, consent, tags, retention_class, expires_at";
const CALL_FIELDS: i16 = 38;

/// The columns [`encode_event`] writes.
pub const EVENT_COLUMNS: &str = "id, call_id, at, kind, detail";
const EVENT_FIELDS: i16 = 5;

/// A binary COPY stream being built.
pub struct CopyEncoder {
    buf: Vec<u8>,
    rows: usize,
}

impl Default for CopyEncoder {
    fn default() -> Self {
        Self::new()
    }
}

impl CopyEncoder {
    pub fn new() -> Self {
        let mut buf = Vec::with_capacity(64 * 1024);
        buf.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
        buf.extend_from_slice(&0i32.to_be_bytes()); // flags
        buf.extend_from_slice(&0i32.to_be_bytes()); // header extension length
        CopyEncoder { buf, rows: 0 }
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The finished stream (with the trailer).
    pub fn finish(mut self) -> Vec<u8> {
        self.buf.extend_from_slice(&(-1i16).to_be_bytes());
        self.buf
    }

    fn row(&mut self, fields: i16) {
        self.rows += 1;
        self.buf.extend_from_slice(&fields.to_be_bytes());
    }

    fn null(&mut self) {
        self.buf.extend_from_slice(&(-1i32).to_be_bytes());
    }

    fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(&(b.len() as i32).to_be_bytes());
        self.buf.extend_from_slice(b);
    }

    fn text(&mut self, s: Option<&str>) {
        match s {
            Some(s) => self.bytes(s.as_bytes()),
            None => self.null(),
        }
    }

    fn uuid(&mut self, u: Option<Uuid>) {
        match u {
            Some(u) => self.bytes(u.as_bytes()),
            None => self.null(),
        }
    }

    fn i16(&mut self, v: Option<i16>) {
        match v {
            Some(v) => self.bytes(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    fn i32(&mut self, v: Option<i32>) {
        match v {
            Some(v) => self.bytes(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    fn i64(&mut self, v: Option<i64>) {
        match v {
            Some(v) => self.bytes(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    fn f64(&mut self, v: Option<f64>) {
        match v.filter(|v| v.is_finite()) {
            Some(v) => self.bytes(&v.to_be_bytes()),
            None => self.null(),
        }
    }

    fn bool(&mut self, v: bool) {
        self.bytes(&[v as u8]);
    }

    fn timestamptz(&mut self, v: Option<Micros>) {
        self.i64(v.map(|m| m - PG_EPOCH_OFFSET_MICROS));
    }

    /// jsonb's binary form: a version byte (1) and the JSON text.
    fn jsonb(&mut self, v: &serde_json::Value) {
        let mut b = vec![1u8];
        let _ = serde_json::to_writer(&mut b, v);
        self.bytes(&b);
    }

    /// One `calls` row, columns as in [`CALL_COLUMNS`].
    pub fn encode_call(&mut self, r: &CallRecord) {
        self.row(CALL_FIELDS);
        self.uuid(Some(r.id));
        self.timestamptz(Some(r.started_at));
        self.i16(Some(r.revision));
        self.text(Some(&r.node));
        self.text(r.tenant.as_deref());
        self.text(r.trunk.as_deref());
        self.text(Some(&r.direction));
        self.text(r.caller.pseudonym.as_deref());
        self.text(r.caller.masked.as_deref());
        self.text(r.caller.number.as_deref());
        self.bool(r.caller.anonymous);
        self.text(Some(&r.dialled));
        self.text(Some(r.dialled_kind.as_str()));
        self.text(Some(&r.sip_call_id));
        self.timestamptz(r.answered_at);
        self.timestamptz(r.ended_at);
        self.i64(r.duration_ms());
        self.i64(r.billable_ms());
        self.text(Some(r.disposition.as_str()));
        self.i16(r.sip_status);
        self.i16(r.q850_cause);
        self.text(r.hangup_by.map(|h| h.as_str()));
        self.text(r.codec.as_deref());
        let q = r.quality.as_ref();
        self.i32(q.map(|q| q.packets_received.min(i32::MAX as u32) as i32));
        self.i32(q.map(|q| q.packets_lost));
        self.f64(q.map(|q| q.jitter_ms));
        self.f64(q.and_then(|q| q.mos));
        self.f64(q.and_then(|q| q.rtt_ms));
        self.text(r.flow.as_deref());
        self.text(r.room.as_deref());
        self.uuid(r.room_session);
        self.text(r.role.as_deref());
        self.text(r.language.as_deref());
        self.uuid(r.recording_id);
        self.jsonb(&r.consent);
        self.jsonb(&r.tags);
        self.text(Some(&r.retention_class));
        self.timestamptz(r.expires_at);
    }

    /// One `call_events` row, columns as in [`EVENT_COLUMNS`].
    pub fn encode_event(&mut self, e: &CallEvent) {
        self.row(EVENT_FIELDS);
        self.uuid(Some(e.id));
        self.uuid(Some(e.call_id));
        self.timestamptz(Some(e.at));
        self.text(Some(&e.kind));
        self.jsonb(&e.detail);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cdr::model::tests::sample;

    #[test]
    fn the_stream_has_the_signature_rows_and_trailer() {
        let mut enc = CopyEncoder::new();
        enc.encode_call(&sample());
        assert_eq!(enc.rows(), 1);
        let b = enc.finish();
        assert_eq!(&b[..11], b"PGCOPY\n\xff\r\n\0");
        assert_eq!(&b[19..21], &CALL_FIELDS.to_be_bytes());
        assert_eq!(&b[b.len() - 2..], &[0xff, 0xff]);
        // The first field is the 16-byte UUID.
        assert_eq!(&b[21..25], &16i32.to_be_bytes());
    }

    #[test]
    fn the_column_list_matches_the_field_count() {
        assert_eq!(CALL_COLUMNS.split(',').count(), CALL_FIELDS as usize);
        assert_eq!(EVENT_COLUMNS.split(',').count(), EVENT_FIELDS as usize);
    }

    #[test]
    fn timestamps_count_from_2000() {
        let mut enc = CopyEncoder::new();
        enc.timestamptz(Some(PG_EPOCH_OFFSET_MICROS + 5));
        assert_eq!(&enc.buf[19..], &[0, 0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 5]);
    }
}
