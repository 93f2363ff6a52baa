#!/bin/sh
# Runs once, when a primary's data directory is empty (the postgres image's
# /docker-entrypoint-initdb.d): the application role and its databases, and
# the replication role and slot a standby streams from. Used by
# docker-compose.yaml and by deploy/k8s/postgres.
#   APP_DB_USER, APP_DB_PASSWORD  the application role (CREATEDB)
#   APP_DATABASES                 space-separated databases it owns
#   REPLICATOR_PASSWORD           the replication role's password
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" \
  -v user="$APP_DB_USER" -v password="$APP_DB_PASSWORD" -v replicator="$REPLICATOR_PASSWORD" <<'SQL'
CREATE ROLE :"user" LOGIN CREATEDB PASSWORD :'password';
CREATE ROLE replicator LOGIN REPLICATION PASSWORD :'replicator';
SELECT pg_create_physical_replication_slot('standby');
SQL
for db in ${APP_DATABASES:-}; do
  echo 'CREATE DATABASE :"db" OWNER :"user"' |
    psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" -v db="$db" -v user="$APP_DB_USER"
done
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
