#!/usr/bin/env bash
# audit-overhead.sh: publish latency of tufa-server with the audit record (this checkout) against the
# server as it was before the record existed (commit b95e390, main before issue 9), on SQLite and,
# when DATABASE_URL is set, on PostgreSQL.
#
# It builds tufa-server at the base commit from `git archive`, extracted once to
# <target>/audit-bench-base/src-<commit> (release, target directory <target>/audit-bench-base, seeded
# once with hard links to this checkout's release dependencies so only the workspace crates compile),
# builds this checkout's tufa-server and
# audit-bench (release), then runs `audit-bench publish`, which starts both servers side by side and
# drives the same publishes against each in alternation (see bench/README.md).
#
# Usage: bench/audit-overhead.sh [audit-bench publish options, e.g. --publishes 300 --targets 100]
# Environment: AUDIT_BENCH_BASE (default b95e390), DATABASE_URL (adds the PostgreSQL run),
# CARGO_TARGET_DIR (default <checkout>/target), AUDIT_BENCH_SKIP_BUILD=1 (use the binaries as built).
set -euo pipefail

base_commit="${AUDIT_BENCH_BASE:-b95e390}"
checkout="$(git -C "$(dirname "$0")/.." rev-parse --show-toplevel)"
target="${CARGO_TARGET_DIR:-$checkout/target}"
base_target="$target/audit-bench-base"

if [ "${AUDIT_BENCH_SKIP_BUILD:-}" != 1 ]; then
  # The base sources are extracted once per commit to a fixed place, so later runs find the base
  # build up to date (Cargo keys a workspace crate's build on its source path and file times).
  base_src="$base_target/src-$base_commit"
  if [ ! -f "$base_src/Cargo.toml" ]; then
    mkdir -p "$base_src.partial"
    git -C "$checkout" archive "$base_commit" | tar -x -C "$base_src.partial"
    mv "$base_src.partial" "$base_src"
  fi
  if [ ! -d "$base_target/release" ] && [ -d "$target/release/deps" ]; then
    # Third-party crates are the same at both commits; hard links cost no disk space. Only the
    # dependency directories are linked, never a final binary, so no build writes through a link
    # into this checkout's binaries.
    mkdir -p "$base_target/release"
    for dir in deps build .fingerprint; do
      cp -al "$target/release/$dir" "$base_target/release/$dir"
    done
  fi
  echo "audit-overhead: building tufa-server at $base_commit (release) in $base_target" >&2
  cargo build --locked --release -p tufa-server --manifest-path "$base_src/Cargo.toml" --target-dir "$base_target"
  echo "audit-overhead: building tufa-server and audit-bench at $(git -C "$checkout" rev-parse --short HEAD) (release)" >&2
  cargo build --locked --release -p tufa-server -p tufa-bench --manifest-path "$checkout/Cargo.toml" \
    --target-dir "$target"
fi

base_rev="$(git -C "$checkout" rev-parse --short "$base_commit")"
head_rev="$(git -C "$checkout" rev-parse --short HEAD)"
if [ -n "$(git -C "$checkout" status --porcelain --untracked-files=no)" ]; then
  head_rev="$head_rev+changes"
fi
exec "$target/release/audit-bench" publish \
  --base "$base_target/release/tufa-server" --base-label "$base_rev (no record)" \
  --head "$target/release/tufa-server" --head-label "$head_rev (record)" "$@"
