# Sourced by the benchmarks that run with --tls (run.sh, instructions.sh).
# bench_tls_cert PGDATA: one self-signed certificate in $WORK for every TLS
# server of the run (nothing is verified: sslmode=require and
# server_tls_mode = "require"), readable by PostgreSQL when we are root,
# and PostgreSQL's ssl settings appended to PGDATA/postgresql.conf (in
# force from its next start or reload). Needs WORK and die.
bench_tls_cert() {
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=127.0.0.1" -keyout "$WORK/tls.key" -out "$WORK/tls.crt" >"$WORK/openssl.log" 2>&1 ||
    die "openssl failed: $(tail -3 "$WORK/openssl.log")"
  chmod 600 "$WORK/tls.key"
  if [ "$(id -u)" -eq 0 ]; then chown postgres:postgres "$WORK/tls.key" "$WORK/tls.crt"; fi
  printf "ssl = on\nssl_cert_file = '%s'\nssl_key_file = '%s'\n" "$WORK/tls.crt" "$WORK/tls.key" >>"$1/postgresql.conf"
}
