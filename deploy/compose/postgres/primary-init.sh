#!/bin/sh
# Runs once, when the primary's volume is empty (docker-entrypoint-initdb.d):
# the application role and its two databases, and the replication role and
# slot the standby streams from.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" <<SQL
CREATE ROLE chatpoc LOGIN CREATEDB PASSWORD '${CHATPOC_DB_PASSWORD}';
CREATE DATABASE internal OWNER chatpoc;
CREATE DATABASE external OWNER chatpoc;
CREATE ROLE replicator LOGIN REPLICATION PASSWORD '${REPLICATOR_PASSWORD}';
SELECT pg_create_physical_replication_slot('standby');
SQL
echo "host replication replicator all scram-sha-256" >> "$PGDATA/pg_hba.conf"
