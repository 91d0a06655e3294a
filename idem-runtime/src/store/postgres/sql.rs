//! The PostgreSQL store's schema and statements. Each operation is one statement, so one
//! atomic step and one round trip.
//!
//! Every statement that reads the time takes `$1`: the caller's clock in ms since the Unix
//! epoch, or NULL for the database's `statement_timestamp()` (the one clock a fleet sharing the
//! database shares; the start of the statement, not of its transaction, so a statement inside a
//! long transaction still reads the current time).

/// The schema for the default names, `"public"."idem_records"`. The store's own
/// [`migration`] renders it for other names by replacing the quoted names.
pub(super) const MIGRATION: &str = r#"CREATE SEQUENCE IF NOT EXISTS "public"."idem_records_token";
CREATE TABLE IF NOT EXISTS "public"."idem_records" (
    record_key  bytea       PRIMARY KEY CHECK (octet_length(record_key) = 32),
    token       bigint      NOT NULL,
    fingerprint bytea       NOT NULL CHECK (octet_length(fingerprint) = 32),
    completed   boolean     NOT NULL,
    deadline    timestamptz NOT NULL,
    purge_at    timestamptz NOT NULL,
    record      bytea,
    CHECK (completed = (record IS NOT NULL))
);
ALTER SEQUENCE "public"."idem_records_token" OWNED BY "public"."idem_records".token;
CREATE INDEX IF NOT EXISTS "idem_records_purge_at" ON "public"."idem_records" (purge_at);
COMMENT ON TABLE "public"."idem_records" IS
    'idem idempotency records, layout 1: SHA-256 digests of scope and key, never a raw key';
"#;

/// Where the store's table lives. Both names are lower-case SQL identifiers (checked by the
/// builder), always written quoted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Names {
    pub(super) schema: String,
    pub(super) table: String,
}

impl Names {
    /// `"schema"."table"`.
    pub(super) fn table(&self) -> String {
        format!(r#""{}"."{}""#, self.schema, self.table)
    }

    /// The claim token sequence as a `regclass` literal.
    fn sequence(&self) -> String {
        format!(r#"'"{}"."{}_token"'"#, self.schema, self.table)
    }
}

/// [`MIGRATION`] for `names`; a schema other than `public` is created too.
pub(super) fn migration(names: &Names) -> String {
    let body = MIGRATION
        .replace(r#""public"."#, &format!(r#""{}"."#, names.schema))
        .replace(r#""idem_records"#, &format!(r#""{}"#, names.table));
    if names.schema == "public" {
        body
    } else {
        format!("CREATE SCHEMA IF NOT EXISTS \"{}\";\n{body}", names.schema)
    }
}

/// Whether `name` may name the schema or the table: a lower-case SQL identifier short enough
/// that the names derived from it (`<table>_purge_at`) stay within PostgreSQL's 63 bytes.
pub(super) fn is_identifier(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some('a'..='z' | '_'))
        && chars.all(|c| matches!(c, 'a'..='z' | '0'..='9' | '_'))
        && name.len() <= 48
}

/// The time `$1` stands for.
const NOW: &str = "coalesce(timestamptz 'epoch' + $1::int8 * interval '1 millisecond', statement_timestamp())";

/// `$n` milliseconds as an interval.
fn ms(param: &str) -> String {
    format!("{param}::int8 * interval '1 millisecond'")
}

/// The statements of one table, rendered once per store.
#[derive(Debug)]
pub(super) struct Statements {
    /// `$1` clock, `$2` key, `$3` fingerprint, `$4` lease ms, `$5` how long after its lease an
    /// abandoned claim is swept, in ms. At most one row: `token` when acquired; otherwise
    /// `completed`, `same` (fingerprint), `left_us` (lease left) and `record` (when `same`) of
    /// the live row found. No row: the key changed between the statement's snapshot and its
    /// write (a concurrent claim or sweep committed in between); running it again sees why.
    pub(super) claim: String,
    /// `claim` inside the caller's transaction, for a handler that writes through it: the same
    /// parameters and columns, plus `$6`, the key's advisory lock, and a last column `busy`.
    /// A live row (completed, or claimed outside a transaction) is answered as `claim` does,
    /// without the lock. Otherwise the key is taken only under `pg_try_advisory_xact_lock($6)`,
    /// held until the transaction ends; when another transaction holds it, the one row has
    /// `busy` true. The claim's row is written in the transaction: nobody else sees it until it
    /// commits, completed, together with the handler's own writes.
    pub(super) claim_in_transaction: String,
    /// `$1` clock, `$2` key, `$3` token, `$4` fingerprint, `$5` record, `$6` ttl ms. One row,
    /// one boolean: stored now, or stored by this token already (a retry whose first reply was
    /// lost).
    pub(super) complete: String,
    /// `$1` key, `$2` token. Rows affected: 1 released, 0 lost.
    pub(super) release: String,
    /// `$1` clock, `$2` key, `$3` token, `$4` lease ms, `$5` as in `claim`. Rows affected: 1
    /// renewed, 0 lost.
    pub(super) renew: String,
    /// `$1` clock. Deletes at most a batch of rows past their `purge_at`, found through the
    /// `purge_at` index; rows other sessions hold locks on are skipped. The batch size is
    /// written into the statement: with a known limit even a generic plan (made without the
    /// parameters' values) reads the index, and stays cheap enough for no JIT.
    pub(super) sweep: String,
    /// Mixed into every advisory lock key of this table (FNV-1a of its quoted name), so that
    /// tables sharing a database do not share locks.
    pub(super) lock_salt: u64,
}

impl Statements {
    pub(super) fn new(names: &Names, sweep_batch: u32) -> Self {
        let (t, seq) = (names.table(), names.sequence());
        let (lease, grace) = (ms("$4"), ms("($4::int8 + $5::int8)"));
        let claim = format!(
            "WITH found AS (
    SELECT completed, fingerprint, deadline, record FROM {t} WHERE record_key = $2
),
taken AS (
    UPDATE {t}
    SET token = nextval({seq}), fingerprint = $3, completed = false, record = NULL,
        deadline = {NOW} + {lease}, purge_at = {NOW} + {grace}
    WHERE record_key = $2 AND deadline <= {NOW}
    RETURNING token
),
inserted AS (
    INSERT INTO {t} (record_key, token, fingerprint, completed, deadline, purge_at)
    SELECT $2, nextval({seq}), $3, false, {NOW} + {lease}, {NOW} + {grace}
    WHERE NOT EXISTS (SELECT FROM found)
    ON CONFLICT (record_key) DO NOTHING
    RETURNING token
)
SELECT token, NULL::boolean AS completed, NULL::boolean AS same, NULL::int8 AS left_us, NULL::bytea AS record
FROM taken
UNION ALL SELECT token, NULL, NULL, NULL, NULL FROM inserted
UNION ALL
SELECT NULL, completed, fingerprint = $3, (extract(epoch FROM deadline - {NOW}) * 1000000)::int8,
    CASE WHEN fingerprint = $3 THEN record END
FROM found WHERE deadline > {NOW}"
        );
        let claim_in_transaction = format!(
            "WITH found AS (
    SELECT completed, fingerprint, deadline, record FROM {t} WHERE record_key = $2
),
lock AS (
    SELECT pg_try_advisory_xact_lock($6::int8) AS held
    WHERE NOT EXISTS (SELECT FROM found WHERE deadline > {NOW})
),
taken AS (
    UPDATE {t}
    SET token = nextval({seq}), fingerprint = $3, completed = false, record = NULL,
        deadline = {NOW} + {lease}, purge_at = {NOW} + {grace}
    WHERE record_key = $2 AND deadline <= {NOW} AND (SELECT held FROM lock)
    RETURNING token
),
inserted AS (
    INSERT INTO {t} (record_key, token, fingerprint, completed, deadline, purge_at)
    SELECT $2, nextval({seq}), $3, false, {NOW} + {lease}, {NOW} + {grace}
    WHERE NOT EXISTS (SELECT FROM found) AND (SELECT held FROM lock)
    ON CONFLICT (record_key) DO NOTHING
    RETURNING token
)
SELECT token, NULL::boolean AS completed, NULL::boolean AS same, NULL::int8 AS left_us, NULL::bytea AS record,
    false AS busy
FROM taken
UNION ALL SELECT token, NULL, NULL, NULL, NULL, false FROM inserted
UNION ALL
SELECT NULL, completed, fingerprint = $3, (extract(epoch FROM deadline - {NOW}) * 1000000)::int8,
    CASE WHEN fingerprint = $3 THEN record END, false
FROM found WHERE deadline > {NOW}
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, true FROM lock WHERE NOT held"
        );
        let ttl = ms("$6");
        let complete = format!(
            "WITH stored AS (
    UPDATE {t}
    SET completed = true, fingerprint = $4, record = $5, deadline = {NOW} + {ttl}, purge_at = {NOW} + {ttl}
    WHERE record_key = $2 AND token = $3 AND NOT completed
    RETURNING 1
)
SELECT EXISTS (SELECT FROM stored)
    OR EXISTS (SELECT FROM {t} WHERE record_key = $2 AND token = $3 AND completed)"
        );
        let release = format!("DELETE FROM {t} WHERE record_key = $1 AND token = $2 AND NOT completed");
        let renew = format!(
            "UPDATE {t} SET deadline = {NOW} + {lease}, purge_at = {NOW} + {grace}
WHERE record_key = $2 AND token = $3 AND NOT completed"
        );
        let sweep = format!(
            "DELETE FROM {t} WHERE ctid = ANY (ARRAY (
    SELECT ctid FROM {t} WHERE purge_at <= {NOW} ORDER BY purge_at LIMIT {sweep_batch} FOR UPDATE SKIP LOCKED
))"
        );
        let lock_salt =
            t.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3));
        Self { claim, claim_in_transaction, complete, release, renew, sweep, lock_salt }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_default_names_render_the_published_migration() {
        let names = Names { schema: "public".into(), table: "idem_records".into() };
        assert_eq!(migration(&names), MIGRATION);
    }

    #[test]
    fn other_names_replace_every_name_and_create_the_schema() {
        let sql = migration(&Names { schema: "billing".into(), table: "idem".into() });
        assert!(sql.starts_with("CREATE SCHEMA IF NOT EXISTS \"billing\";\n"));
        assert!(!sql.contains("public") && !sql.contains("idem_records"), "{sql}");
        for name in [r#""billing"."idem_token""#, r#""billing"."idem" ("#, r#""idem_purge_at""#] {
            assert!(sql.contains(name), "{name} missing from {sql}");
        }
    }

    #[test]
    fn the_sweep_limit_is_written_into_its_statement() {
        let names = Names { schema: "public".into(), table: "idem_records".into() };
        let statements = Statements::new(&names, 250);
        assert!(
            statements.sweep.contains("ORDER BY purge_at LIMIT 250 FOR UPDATE SKIP LOCKED"),
            "{}",
            statements.sweep
        );
        assert!(!statements.sweep.contains("$2"), "the sweep takes the clock only");
    }

    #[test]
    fn identifiers_are_lower_case_words() {
        for ok in ["public", "idem_records", "_x1"] {
            assert!(is_identifier(ok), "{ok}");
        }
        for bad in ["", "1x", "Idem", "a-b", "a\"b", "a b", &"x".repeat(49)] {
            assert!(!is_identifier(bad), "{bad}");
        }
    }
}
