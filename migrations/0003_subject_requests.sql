-- Issue 16: subject requests with their due dates, corrections, and the clocks of the
-- privacy tables themselves.

-- Every request a data subject makes (access, erasure, correction, objection), from the day
-- it was received to the day it was answered. `due_at` is received + `cdr.request_due_days`
-- (30: GDPR Art. 12(3)). Like the erasure audit, it names the subject by a hash of the
-- pseudonym (`subject_ref`), never by the pseudonym or the number.
CREATE TABLE subject_requests (
    id           uuid PRIMARY KEY,
    kind         text NOT NULL CHECK (kind IN ('access', 'erasure', 'correction', 'objection')),
    subject_ref  text NOT NULL,
    received_at  timestamptz NOT NULL,
    due_at       timestamptz NOT NULL,
    completed_at timestamptz,
    requested_by text NOT NULL,
    note         text NOT NULL DEFAULT '',
    outcome      jsonb
);
CREATE INDEX subject_requests_open ON subject_requests (due_at) WHERE completed_at IS NULL;
CREATE INDEX subject_requests_subject ON subject_requests (subject_ref, kind) WHERE completed_at IS NULL;
CREATE INDEX subject_requests_completed ON subject_requests (completed_at) WHERE completed_at IS NOT NULL;

-- The audit of corrections: which fields of how many records changed, never the values.
CREATE TABLE corrections (
    id             uuid PRIMARY KEY,
    subject_ref    text NOT NULL,
    at             timestamptz NOT NULL DEFAULT now(),
    requested_by   text NOT NULL,
    fields         text[] NOT NULL,
    calls_affected integer NOT NULL,
    held_skipped   integer NOT NULL,
    live_skipped   integer NOT NULL
);
CREATE INDEX corrections_at ON corrections (at);
CREATE INDEX erasure_requests_completed ON erasure_requests (completed_at);
CREATE INDEX opt_outs_created ON opt_outs (created_at);
