#!/usr/bin/env bash
# What bounds a `Tx` miss in PostgreSQL itself: pgbench runs each transaction shape (the plain
# handler's, a `Tx` miss as sent today, pipelined variants, a claim writing no row) on a scratch
# schema `idem_tx_shapes`, the shapes alternated, and prints each one's ratio to the plain shape
# of the same round. The claim and record statements are the PostgreSQL store's
# (`claim_in_transaction`, `complete` in idem-runtime/src/store/postgres/sql.rs) with the
# database's clock and a 30 s lease written in.
#
#   scripts/tx_shapes.sh postgres://USER@HOST:PORT/DB [--seconds 6] [--rounds 2] [--clients 16]
set -euo pipefail
url=${1:?usage: scripts/tx_shapes.sh postgres://USER@HOST:PORT/DB [--seconds 6] [--rounds 2] [--clients 16]}
shift
seconds=6 rounds=2 clients=16
while [[ $# -gt 0 ]]; do
  case $1 in
    --seconds) seconds=$2; shift 2 ;;
    --rounds) rounds=$2; shift 2 ;;
    --clients) clients=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
dir=$(mktemp -d)
trap 'rm -rf "$dir"; psql -q "$url" -c "DROP SCHEMA IF EXISTS idem_tx_shapes CASCADE" 2>/dev/null || true' EXIT
# The store's own table (its migration, from the source), in a scratch schema, and an orders table.
migration=$(sed -n '/^pub(super) const MIGRATION/,/^"#;/p' "$(dirname "$0")/../idem-runtime/src/store/postgres/sql.rs" |
  sed '1s/.*r#"//; $d' | sed 's/"public"/"idem_tx_shapes"/g')
[[ $migration == *"CREATE TABLE"* ]] || { echo "the store's migration was not found in sql.rs" >&2; exit 1; }
psql -q "$url" <<SQL
DROP SCHEMA IF EXISTS idem_tx_shapes CASCADE;
CREATE SCHEMA idem_tx_shapes;
$migration
CREATE TABLE idem_tx_shapes.orders (id bigserial PRIMARY KEY, item text NOT NULL, qty integer NOT NULL);
SQL
t=idem_tx_shapes.idem_records
now="statement_timestamp()"
key="sha256(:k::text::bytea)"
fp="sha256((:k::text || 'f')::bytea)"
lease="interval '30 s'" grace="interval '90 s'" ttl="interval '1 day'"
claim="WITH found AS (SELECT completed, fingerprint, deadline, record FROM $t WHERE record_key = $key), \
lock AS (SELECT pg_try_advisory_xact_lock(:k::int8) AS held WHERE NOT EXISTS (SELECT FROM found WHERE deadline > $now)), \
taken AS (UPDATE $t SET token = nextval('idem_tx_shapes.idem_records_token'), fingerprint = $fp, completed = false, \
record = NULL, deadline = $now + $lease, purge_at = $now + $grace \
WHERE record_key = $key AND deadline <= $now AND (SELECT held FROM lock) RETURNING token), \
inserted AS (INSERT INTO $t (record_key, token, fingerprint, completed, deadline, purge_at) \
SELECT $key, nextval('idem_tx_shapes.idem_records_token'), $fp, false, $now + $lease, $now + $grace \
WHERE NOT EXISTS (SELECT FROM found) AND (SELECT held FROM lock) ON CONFLICT (record_key) DO NOTHING RETURNING token) \
SELECT token, NULL::boolean, NULL::boolean, NULL::int8, NULL::bytea, false FROM taken \
UNION ALL SELECT token, NULL, NULL, NULL, NULL, false FROM inserted \
UNION ALL SELECT NULL, completed, fingerprint = $fp, (extract(epoch FROM deadline - $now) * 1000000)::int8, \
CASE WHEN fingerprint = $fp THEN record END, false FROM found WHERE deadline > $now \
UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, true FROM lock WHERE NOT held;"
record="WITH stored AS (UPDATE $t SET completed = true, fingerprint = $fp, record = decode(repeat('ab', 150), 'hex'), \
deadline = $now + $ttl, purge_at = $now + $ttl WHERE record_key = $key AND NOT completed RETURNING 1) \
SELECT EXISTS (SELECT FROM stored);"
look="SELECT pg_try_advisory_xact_lock(:k::int8), (SELECT record FROM $t WHERE record_key = $key);"
record_once="INSERT INTO $t (record_key, token, fingerprint, completed, deadline, purge_at, record) \
VALUES ($key, :k, $fp, true, $now + $ttl, $now + $ttl, decode(repeat('ab', 150), 'hex'));"
insert="INSERT INTO idem_tx_shapes.orders (item, qty) VALUES ('book', 1) RETURNING id;"
shape() { # name, then its lines
  local name=$1; shift
  printf '%s\n' '\set k random(1, 9000000000000)' "$@" > "$dir/$name.sql"
  shapes+=("$name")
}
shapes=()
shape plain "BEGIN;" "$insert" "COMMIT;"
shape plain+select1 "BEGIN;" "SELECT 1;" "$insert" "COMMIT;"
shape plain+savepoint "BEGIN;" "SAVEPOINT s;" "$insert" "COMMIT;"
shape plain+claim "BEGIN;" "$claim" "$insert" "COMMIT;"
shape tx-miss "BEGIN;" "$claim" "SAVEPOINT s;" "$insert" "$record" "COMMIT;"
shape tx-miss-pipelined '\startpipeline' "BEGIN;" "$claim" "SAVEPOINT s;" '\endpipeline' "$insert" \
  '\startpipeline' "$record" "COMMIT;" '\endpipeline'
shape rowless-pipelined '\startpipeline' "BEGIN;" "$look" "SAVEPOINT s;" '\endpipeline' "$insert" \
  '\startpipeline' "$record_once" "COMMIT;" '\endpipeline'
shape rowless-pipelined-no-savepoint '\startpipeline' "BEGIN;" "$look" '\endpipeline' "$insert" \
  '\startpipeline' "$record_once" "COMMIT;" '\endpipeline'
echo "pgbench -M prepared -c $clients -j 2 -T $seconds, $rounds rounds, shapes alternated"
for round in $(seq 1 "$rounds"); do
  plain_tps=
  for name in "${shapes[@]}"; do
    tps=$(pgbench -n -M prepared -c "$clients" -j 2 -T "$seconds" -f "$dir/$name.sql" "$url" 2>&1 | awk '/^tps/ { print $3 }')
    [[ -z $tps ]] && { echo "$name failed" >&2; exit 1; }
    [[ -z $plain_tps ]] && plain_tps=$tps
    printf 'round %s  %-32s %9.0f tps  %.2fx\n' "$round" "$name" "$tps" "$(awk -v a="$tps" -v b="$plain_tps" 'BEGIN { print a / b }')"
  done
done
