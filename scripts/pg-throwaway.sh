# shellcheck shell=bash
# Throwaway PostgreSQL cluster for tests. Source this file, then:
#
#   pg_throwaway_start    # initdb + start on a random 127.0.0.1 port; exports
#                         # DATABASE_URL (superuser URL), PGTMP, PGHOST, PGPORT, PGUSER, PG_BINDIR
#   ...run tests...
#   pg_throwaway_stop     # stops the server and deletes the cluster
#
# Works as root (the PostgreSQL binaries run as the `postgres` OS user through runuser,
# because initdb refuses to run as root) and as an ordinary user (binaries run directly).
# Knobs: PG_BINDIR (default: the newest /usr/lib/postgresql/*/bin), PG_TMPROOT (default /tmp).
# Safe under `set -euo pipefail`: both functions return non-zero instead of exiting.

# Runs a PostgreSQL binary as the right OS user, from inside the cluster directory (the
# postgres user must be able to read its working directory).
_pg_throwaway_run() {
  if [ "$(id -u)" -eq 0 ]; then
    (cd "$PGTMP" && runuser -u postgres -- "$@")
  else
    (cd "$PGTMP" && "$@")
  fi
}

pg_throwaway_start() {
  local bindir="${PG_BINDIR:-}"
  if [ -z "$bindir" ]; then
    bindir="$(find /usr/lib/postgresql -mindepth 2 -maxdepth 2 -type d -name bin 2>/dev/null | sort -V | tail -n 1)"
  fi
  if [ ! -x "$bindir/initdb" ]; then
    echo "pg_throwaway: no initdb under '${bindir}' (install PostgreSQL, e.g. apt-get install postgresql)" >&2
    return 1
  fi
  if [ "$(id -u)" -eq 0 ] && ! id -u postgres >/dev/null 2>&1; then
    useradd --system --home-dir /nonexistent --shell /usr/sbin/nologin postgres || return 1
  fi

  # Keep the path short: the Unix socket path (dir + /.s.PGSQL.NNNNN) must stay under 108 bytes.
  PGTMP="$(mktemp -d "${PG_TMPROOT:-/tmp}/pg.XXXXXX")" || return 1
  if [ "$(id -u)" -eq 0 ]; then
    chown postgres: "$PGTMP" || { rm -rf "$PGTMP"; return 1; }
  fi
  chmod 700 "$PGTMP"

  if ! _pg_throwaway_run "$bindir/initdb" -D "$PGTMP/data" -U postgres -A trust -E UTF8 \
      --locale=C --no-sync >"$PGTMP/initdb.log" 2>&1; then
    echo "pg_throwaway: initdb failed:" >&2
    cat "$PGTMP/initdb.log" >&2
    rm -rf "$PGTMP"
    return 1
  fi

  local attempt port
  for attempt in 1 2 3 4 5; do
    port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
    # Skip ports something already answers on; a bind race is handled by the retry below.
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      continue
    fi
    if _pg_throwaway_run "$bindir/pg_ctl" -D "$PGTMP/data" -l "$PGTMP/server.log" -w -t 60 \
        -o "-p $port -k $PGTMP -c listen_addresses=127.0.0.1 -c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=200" \
        start >/dev/null; then
      export PGTMP PGPORT="$port" PGHOST="$PGTMP" PGUSER=postgres PG_BINDIR="$bindir"
      export DATABASE_URL="postgres://postgres@127.0.0.1:$port/postgres"
      return 0
    fi
    if ! grep -qi "could not bind\|address already in use" "$PGTMP/server.log" 2>/dev/null; then
      break
    fi
    echo "pg_throwaway: port $port was taken (attempt $attempt), trying another" >&2
  done
  echo "pg_throwaway: server failed to start:" >&2
  cat "$PGTMP/server.log" >&2 2>/dev/null || true
  rm -rf "$PGTMP"
  unset PGTMP
  return 1
}

pg_throwaway_stop() {
  if [ -z "${PGTMP:-}" ] || [ ! -d "$PGTMP" ]; then
    return 0
  fi
  _pg_throwaway_run "$PG_BINDIR/pg_ctl" -D "$PGTMP/data" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$PGTMP"
  unset PGTMP PGPORT PGHOST PGUSER DATABASE_URL
}
