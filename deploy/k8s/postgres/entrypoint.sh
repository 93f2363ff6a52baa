#!/bin/sh
# Starts Postgres as a primary (PG_ROLE=primary, the default) or as a hot
# standby of PG_PRIMARY_HOST (PG_ROLE=standby). A standby's first start,
# on an empty data directory, takes a base backup of the primary (-R writes
# the streaming-replication settings) through the slot init.sh created; the
# image's own entrypoint then finds a data directory and starts Postgres.
# Used by docker-compose.yaml and by deploy/k8s/postgres.
set -eu
if [ "${PG_ROLE:-primary}" = standby ] && [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  until PGPASSWORD="$REPLICATOR_PASSWORD" gosu postgres pg_basebackup \
      -h "$PG_PRIMARY_HOST" -U replicator -D "$PGDATA" -R -X stream -S standby; do
    echo "standby: waiting for the primary's base backup from $PG_PRIMARY_HOST"; sleep 2
  done
fi
exec docker-entrypoint.sh postgres -c wal_level=replica -c max_wal_senders=10 \
  -c max_replication_slots=10 -c hot_standby=on -c hot_standby_feedback=on -c jit=off
