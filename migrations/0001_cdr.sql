-- tolk CDR schema. Read CDRs through `tolk cdr ...` or the admin API: this schema can change.
-- Calls and their events are partitioned by month (UTC); tolk_ensure_partitions() creates
-- the months a batch needs before it is written.

CREATE TABLE retention_policies (
    name        text PRIMARY KEY,
    keep_for    interval NOT NULL,
    action      text NOT NULL CHECK (action IN ('delete', 'anonymise')),
    description text NOT NULL DEFAULT ''
);

CREATE TABLE rooms (
    id              text PRIMARY KEY,
    tenant          text,
    kind            text NOT NULL CHECK (kind IN ('conference', 'interpretation')),
    retention_class text,
    created_at      timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE room_sessions (
    id         uuid PRIMARY KEY,
    room_id    text NOT NULL,
    started_at timestamptz NOT NULL,
    ended_at   timestamptz,
    max_members integer
);

CREATE TABLE calls (
    id               uuid NOT NULL,
    started_at       timestamptz NOT NULL,
    revision         smallint NOT NULL,
    node             text NOT NULL,
    tenant           text,
    trunk            text,
    direction        text NOT NULL,
    caller_pseudonym text,
    caller_masked    text,
    caller_number    text,
    caller_anonymous boolean NOT NULL DEFAULT false,
    dialled          text NOT NULL,
    dialled_kind     text NOT NULL,
    sip_call_id      text NOT NULL,
    answered_at      timestamptz,
    ended_at         timestamptz,
    duration_ms      bigint,
    billable_ms      bigint,
    disposition      text NOT NULL,
    sip_status       smallint,
    q850_cause       smallint,
    hangup_by        text,
    codec            text,
    packets_received integer,
    packets_lost     integer,
    jitter_ms        double precision,
    mos              double precision,
    rtt_ms           double precision,
    flow             text,
    room             text,
    room_session     uuid,
    role             text,
    language         text,
    recording_id     uuid,
    consent          jsonb NOT NULL DEFAULT '{}',
    tags             jsonb NOT NULL DEFAULT '{}',
    retention_class  text NOT NULL,
    expires_at       timestamptz,
    legal_hold       boolean NOT NULL DEFAULT false,
    anonymised_at    timestamptz,
    PRIMARY KEY (id, started_at)
) PARTITION BY RANGE (started_at);

CREATE INDEX calls_caller_pseudonym ON calls (caller_pseudonym);
CREATE INDEX calls_expires_at ON calls (expires_at) WHERE NOT legal_hold;
CREATE INDEX calls_sip_call_id ON calls (sip_call_id);
CREATE INDEX calls_in_progress ON calls (node) WHERE disposition = 'in_progress';

CREATE TABLE call_events (
    id      uuid NOT NULL,
    call_id uuid NOT NULL,
    at      timestamptz NOT NULL,
    kind    text NOT NULL,
    detail  jsonb NOT NULL DEFAULT '{}',
    PRIMARY KEY (id, at)
) PARTITION BY RANGE (at);

CREATE INDEX call_events_call_id ON call_events (call_id);

CREATE TABLE recordings (
    id               uuid PRIMARY KEY,
    call_id          uuid,
    room             text,
    room_session     uuid,
    path             text NOT NULL,
    format           text NOT NULL,
    started_at       timestamptz NOT NULL,
    ended_at         timestamptz,
    seconds          double precision,
    caller_pseudonym text,
    retention_class  text NOT NULL,
    expires_at       timestamptz,
    legal_hold       boolean NOT NULL DEFAULT false,
    deleted_at       timestamptz
);

CREATE INDEX recordings_caller_pseudonym ON recordings (caller_pseudonym);

CREATE TABLE opt_outs (
    pseudonym  text NOT NULL,
    scope      text NOT NULL CHECK (scope IN ('record', 'retain', 'contact')),
    source     text NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (pseudonym, scope)
);

-- The audit trail of erasure requests. It holds the pseudonym, never the number.
CREATE TABLE erasure_requests (
    id                  uuid PRIMARY KEY,
    pseudonym           text NOT NULL,
    requested_at        timestamptz NOT NULL,
    completed_at        timestamptz,
    requested_by        text NOT NULL,
    action              text NOT NULL CHECK (action IN ('delete', 'anonymise')),
    calls_affected      integer,
    events_affected     integer,
    recordings_affected integer,
    spool_affected      integer,
    status              text NOT NULL
);

CREATE FUNCTION tolk_ensure_partitions(p_from timestamptz, p_to timestamptz) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    m date := date_trunc('month', p_from AT TIME ZONE 'UTC')::date;
    last date := date_trunc('month', p_to AT TIME ZONE 'UTC')::date;
    lo timestamptz;
    hi timestamptz;
BEGIN
    WHILE m <= last LOOP
        lo := m::timestamp AT TIME ZONE 'UTC';
        hi := (m + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF calls FOR VALUES FROM (%L) TO (%L)',
                       'calls_' || to_char(m, 'YYYYMM'), lo, hi);
        EXECUTE format('CREATE TABLE IF NOT EXISTS %I PARTITION OF call_events FOR VALUES FROM (%L) TO (%L)',
                       'call_events_' || to_char(m, 'YYYYMM'), lo, hi);
        m := (m + interval '1 month')::date;
    END LOOP;
END $$;
