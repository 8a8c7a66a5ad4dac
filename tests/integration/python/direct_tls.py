"""Connects with psycopg (its own libpq, new enough for PostgreSQL 17's
direct TLS) to the conninfo in argv[1], runs SELECT 1, and prints whether
the connection is encrypted. Exit 0 when it worked, 1 when it did not
(the error is printed), 77 when psycopg is not installed."""

import sys

try:
    import psycopg
except ImportError:
    print("psycopg is not installed")
    sys.exit(77)

try:
    with psycopg.connect(sys.argv[1]) as conn:
        one = conn.execute("SELECT 1").fetchone()[0]
        print(f"connected ssl={conn.pgconn.ssl_in_use} one={one}")
except psycopg.Error as e:
    print(f"failed: {e}")
    sys.exit(1)
