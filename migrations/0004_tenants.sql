-- Issue 16: tenants. Each has its own pseudonyms (derived keys: nothing to store here),
-- may have its own retention policy of a class, and a clock that starts when its account
-- closes (`cdr.account_closed_days` later its data is deleted).
CREATE TABLE tenants (
    name       text PRIMARY KEY,
    first_seen timestamptz NOT NULL DEFAULT now(),
    closed_at  timestamptz
);
INSERT INTO tenants (name) SELECT DISTINCT tenant FROM calls WHERE tenant IS NOT NULL ON CONFLICT DO NOTHING;
INSERT INTO tenants (name) SELECT DISTINCT tenant FROM rooms WHERE tenant IS NOT NULL ON CONFLICT DO NOTHING;

-- A tenant's own policy of a class ('' : every tenant's).
ALTER TABLE retention_policies ADD COLUMN tenant text NOT NULL DEFAULT '';
ALTER TABLE retention_policies DROP CONSTRAINT retention_policies_pkey;
ALTER TABLE retention_policies ADD PRIMARY KEY (name, tenant);

-- What a record of `class` and `tenant` becomes when it expires: the tenant's policy of the
-- class if it has one, else the class's.
CREATE FUNCTION tolk_policy_action(p_class text, p_tenant text) RETURNS text
LANGUAGE sql STABLE AS $$
    SELECT action FROM retention_policies
    WHERE name = p_class AND tenant IN (coalesce(p_tenant, ''), '')
    ORDER BY tenant = '' LIMIT 1
$$;

-- Whose calls an opt-out is for (NULL: every tenant's).
ALTER TABLE opt_outs ADD COLUMN tenant text;
