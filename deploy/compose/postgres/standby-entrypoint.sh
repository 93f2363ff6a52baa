#!/bin/sh
# The standby: on an empty volume, a base backup of the primary (-R writes
# the streaming-replication settings), then the stock entrypoint, which finds
# a data directory and starts Postgres as a hot standby.
set -eu
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  mkdir -p "$PGDATA" && chown postgres:postgres "$PGDATA" && chmod 700 "$PGDATA"
  until PGPASSWORD="$REPLICATOR_PASSWORD" gosu postgres pg_basebackup \
      -h pg-primary -U replicator -D "$PGDATA" -R -X stream -S standby; do
    echo "standby: waiting for the primary's base backup"; sleep 2
  done
fi
exec docker-entrypoint.sh postgres -c hot_standby=on -c hot_standby_feedback=on -c jit=off
