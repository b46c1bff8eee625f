//! Correction on request (GDPR Art. 16): the fields of a caller's records that hold what
//! the caller or the flow said about them may be corrected: `language` and the flow's
//! `tags.<key>`. The rest (times, numbers dialled, dispositions, quality) records what
//! happened on the wire and is not the subject's to correct. Records of calls still in
//! progress are skipped (their next revision would undo the correction), and so are records
//! under legal hold (they are kept as they were). The audit row (`corrections`) names the
//! fields and counts, never the values.

use super::query::QueryError;
use sqlx::{Connection, PgConnection};
use std::collections::BTreeMap;

/// A field that may be corrected.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Field {
    Language,
    Tag(String),
}

impl Field {
    /// Reads `language` or `tags.<key>` (key: 1-64 of `A-Za-z0-9_-`).
    pub fn parse(name: &str) -> Result<Field, QueryError> {
        if name == "language" {
            return Ok(Field::Language);
        }
        if let Some(key) = name.strip_prefix("tags.")
            && (1..=64).contains(&key.len())
            && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Ok(Field::Tag(key.to_string()));
        }
        Err(QueryError::Invalid(format!(
            "`{name}` cannot be corrected: only `language` and `tags.<key>` can \
             (the other fields record what happened on the call)"
        )))
    }

    pub fn name(&self) -> String {
        match self {
            Field::Language => "language".into(),
            Field::Tag(k) => format!("tags.{k}"),
        }
    }
}

/// One correction: new values for some fields, and fields to clear, on the records of a
/// subject (all of them, or one call).
#[derive(Debug, Clone, Default)]
pub struct Correction {
    pub set: BTreeMap<Field, String>,
    pub clear: Vec<Field>,
    /// One call of the subject's only.
    pub call: Option<uuid::Uuid>,
    pub requested_by: String,
}

impl Correction {
    /// Builds a correction from `field=value` pairs and field names to clear; refuses an
    /// empty one, a field named twice and a field that cannot be corrected.
    pub fn from_pairs(
        set: &[(String, String)],
        clear: &[String],
        call: Option<uuid::Uuid>,
        requested_by: &str,
    ) -> Result<Correction, QueryError> {
        let mut c = Correction {
            call,
            requested_by: requested_by.to_string(),
            ..Correction::default()
        };
        for (name, value) in set {
            let f = Field::parse(name)?;
            if f == Field::Language && !(1..=35).contains(&value.len()) {
                return Err(QueryError::Invalid(
                    "a language is 1 to 35 characters (a BCP 47 tag)".into(),
                ));
            }
            if value.len() > 1024 {
                return Err(QueryError::Invalid(format!("the value of `{name}` is over 1024 bytes")));
            }
            if c.set.insert(f, value.clone()).is_some() {
                return Err(QueryError::Invalid(format!("`{name}` is named twice")));
            }
        }
        for name in clear {
            let f = Field::parse(name)?;
            if c.set.contains_key(&f) || c.clear.contains(&f) {
                return Err(QueryError::Invalid(format!("`{name}` is named twice")));
            }
            c.clear.push(f);
        }
        if c.set.is_empty() && c.clear.is_empty() {
            return Err(QueryError::Invalid(
                "a correction names at least one field to set or clear".into(),
            ));
        }
        Ok(c)
    }

    /// The fields it touches, by name, sorted.
    pub fn field_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.set.keys().chain(self.clear.iter()).map(Field::name).collect();
        names.sort();
        names
    }
}

/// What a correction did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CorrectionReport {
    pub correction_id: String,
    pub fields: Vec<String>,
    /// Records changed.
    pub calls: u64,
    /// Records left as they were: under legal hold, or of calls still in progress.
    pub held: u64,
    pub live: u64,
    /// The subject requests it answered.
    pub requests: Vec<String>,
}

/// Corrects the records of the subject (named `pseudonyms` by the records, `subject_ref` by
/// the register), audits it and answers their open correction requests, in one transaction.
pub async fn correct(
    conn: &mut PgConnection,
    pseudonyms: &[String],
    subject: &str,
    c: &Correction,
    due_days: u32,
) -> Result<CorrectionReport, QueryError> {
    let tag_set: serde_json::Map<String, serde_json::Value> = c
        .set
        .iter()
        .filter_map(|(f, v)| match f {
            Field::Tag(k) => Some((k.clone(), serde_json::Value::String(v.clone()))),
            Field::Language => None,
        })
        .collect();
    let tag_clear: Vec<String> = c
        .clear
        .iter()
        .filter_map(|f| match f {
            Field::Tag(k) => Some(k.clone()),
            Field::Language => None,
        })
        .collect();
    let language = c.set.get(&Field::Language);
    let clear_language = c.clear.contains(&Field::Language);
    let mut tx = conn.begin().await?;
    // The subject's records this correction names (one call, or all) that it must leave.
    let (held, live): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE legal_hold), count(*) FILTER (WHERE NOT legal_hold AND ended_at IS NULL) \
         FROM calls WHERE caller_pseudonym = ANY($1) AND ($2::uuid IS NULL OR id = $2)",
    )
    .bind(pseudonyms)
    .bind(c.call)
    .fetch_one(&mut *tx)
    .await?;
    let calls = sqlx::query(
        "UPDATE calls SET tags = (tags - $3::text[]) || $4::jsonb, \
         language = CASE WHEN $5::text IS NOT NULL THEN $5 WHEN $6 THEN NULL ELSE language END \
         WHERE caller_pseudonym = ANY($1) AND ($2::uuid IS NULL OR id = $2) \
           AND NOT legal_hold AND ended_at IS NOT NULL AND anonymised_at IS NULL",
    )
    .bind(pseudonyms)
    .bind(c.call)
    .bind(&tag_clear)
    .bind(serde_json::Value::Object(tag_set))
    .bind(language)
    .bind(clear_language)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    let id = uuid::Uuid::now_v7();
    let fields = c.field_names();
    sqlx::query(
        "INSERT INTO corrections (id, subject_ref, requested_by, fields, calls_affected, held_skipped, live_skipped) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(id)
    .bind(subject)
    .bind(&c.requested_by)
    .bind(&fields)
    .bind(calls as i32)
    .bind(held as i32)
    .bind(live as i32)
    .execute(&mut *tx)
    .await?;
    let outcome = serde_json::json!({ "correction_id": id, "fields": fields, "calls": calls });
    let request = super::requests::NewRequest {
        kind: super::requests::RequestKind::Correction,
        subject_ref: subject,
        received_at: None,
        received_micros: None,
        requested_by: &c.requested_by,
        note: "",
        due_days,
    };
    let answered = super::requests::answer(&mut tx, &request, &outcome).await?;
    tx.commit().await?;
    Ok(CorrectionReport {
        correction_id: id.to_string(),
        fields,
        calls,
        held: held as u64,
        live: live as u64,
        requests: answered.iter().map(|i| i.to_string()).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn only_language_and_tags_can_be_corrected_each_once() {
        let c = Correction::from_pairs(
            &pairs(&[("tags.account", "A-17"), ("language", "fr")]),
            &["tags.note".into()],
            None,
            "cli",
        )
        .unwrap();
        assert_eq!(c.field_names(), ["language", "tags.account", "tags.note"]);
        for bad in ["disposition", "caller", "tags.", "tags.a b", "tags.x;drop"] {
            let e = Correction::from_pairs(&pairs(&[(bad, "x")]), &[], None, "cli").unwrap_err();
            assert!(e.to_string().contains("cannot be corrected"), "{bad}: {e}");
        }
        let twice = Correction::from_pairs(&pairs(&[("language", "fr")]), &["language".into()], None, "cli");
        assert!(twice.unwrap_err().to_string().contains("named twice"));
        assert!(Correction::from_pairs(&[], &[], None, "cli").is_err());
        assert!(Correction::from_pairs(&pairs(&[("language", "")]), &[], None, "cli").is_err());
    }
}
