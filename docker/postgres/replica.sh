#!/bin/sh
# Entry point of the replica: on first start, clone the primary with
# pg_basebackup (-R writes primary_conninfo and standby.signal), then run
# PostgreSQL as a streaming hot standby. Runs as the postgres user.
set -e
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  until pg_basebackup -h primary -U replicator -D "$PGDATA" -R -X stream; do
    echo "waiting for the primary..."
    rm -rf "${PGDATA:?}"/*
    sleep 2
  done
  chmod 0700 "$PGDATA"
fi
exec postgres -c hot_standby=on
