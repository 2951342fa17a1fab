import TEPostgres

/// Least privilege in PostgreSQL (version 4; 3 is the outcomes tables). The migrating role owns the
/// tables; `te_audit_writer` (audit-writer) may INSERT into and SELECT from the audit tables, never
/// UPDATE, DELETE or TRUNCATE them (history is append-only); `te_reader` (`te audit`, `te model`) may
/// only SELECT. Login and password are the deployment's (scripts/dev-up.sh, compose, Kubernetes); a
/// role missing here is created without login so the grants always apply. Tables a later migration
/// creates get the same grants by default privileges.
public enum StoreRoles {
    public static let auditWriter = "te_audit_writer"
    public static let reader = "te_reader"

    public static let migration = Migration(
        version: 4, name: "least-privilege roles",
        sql: """
            DO $$
            DECLARE t text;
            BEGIN
                -- Roles are cluster-wide: migrations of two databases may race to create them.
                BEGIN
                    CREATE ROLE te_audit_writer;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
                BEGIN
                    CREATE ROLE te_reader;
                EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                END;
                EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO te_audit_writer', current_database());
                EXECUTE format('GRANT CONNECT ON DATABASE %I TO te_reader', current_database());
                FOREACH t IN ARRAY ARRAY['decisions', 'outcomes', 'rollout_events'] LOOP
                    IF to_regclass(t) IS NOT NULL THEN
                        EXECUTE format('REVOKE ALL ON %I FROM PUBLIC, te_audit_writer, te_reader', t);
                        EXECUTE format('GRANT SELECT, INSERT ON %I TO te_audit_writer', t);
                        EXECUTE format('GRANT SELECT ON %I TO te_reader', t);
                    END IF;
                END LOOP;
            END $$;
            GRANT USAGE ON SCHEMA public TO te_audit_writer, te_reader;
            GRANT SELECT ON schema_migrations TO te_reader;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT ON TABLES TO te_audit_writer;
            ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO te_reader;
            """)
}

extension Migration {
    /// `outcomes` (one row per Outcome, keyed on its decision) and `rollout_events` (one per
    /// RolloutEvent): one column per field of DESIGN.md "Messages", under the same name.
    public static let outcomesAndRolloutEvents = Migration(
        version: 3, name: "outcomes and rollout_events",
        sql: """
            CREATE TABLE outcomes (
                decision_id uuid PRIMARY KEY,
                symbol text NOT NULL,
                model_version text,
                score double precision,
                decision text NOT NULL,
                horizon_ms integer NOT NULL,
                mid_at_decision double precision,
                mid_at_horizon double precision,
                spread_bps_at_decision double precision,
                return_bps double precision,
                eligible boolean,
                resolved_ts_ns bigint NOT NULL,
                reason text,
                inserted_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX outcomes_model_version_resolved ON outcomes (model_version, resolved_ts_ns);
            CREATE TABLE rollout_events (
                event_id uuid PRIMARY KEY,
                ts_ns bigint NOT NULL,
                occurred_at timestamptz NOT NULL,
                kind text NOT NULL,
                model_name text NOT NULL,
                from_version text,
                to_version text,
                metric text,
                value double precision,
                "limit" double precision,
                replica text NOT NULL,
                inserted_at timestamptz NOT NULL DEFAULT now()
            );
            CREATE INDEX rollout_events_ts_ns ON rollout_events (ts_ns);
            """)
}
