-- Issue 16: erasure reaches every store, and its audit row links to no one.
-- The audit keeps a hash of the pseudonym (the subject's reference), never the pseudonym
-- itself: after an erasure no row of the database names the caller's pseudonym.
ALTER TABLE erasure_requests ADD COLUMN subject_ref text;
UPDATE erasure_requests SET subject_ref = encode(sha256(convert_to(pseudonym, 'UTF8')), 'hex');
ALTER TABLE erasure_requests ALTER COLUMN subject_ref SET NOT NULL;
ALTER TABLE erasure_requests DROP COLUMN pseudonym;
ALTER TABLE erasure_requests
    ADD COLUMN room_recordings_policy   text CHECK (room_recordings_policy IN ('delete', 'keep')),
    ADD COLUMN room_recordings_affected integer,
    ADD COLUMN opt_outs_affected        integer,
    ADD COLUMN files_affected           integer,
    ADD COLUMN rejected_affected        integer;
