#!/usr/bin/env bash
# The project's test command (see README): formatting, lints, a build, and every test of the
# workspace, including the black-box flows against tufa-server on SQLite and on a throwaway
# PostgreSQL cluster, and the same flows against Debian's Go notary-server as a reference.
#
# Usage: scripts/test.sh
# Env:   DATABASE_URL   use this (superuser) PostgreSQL instead of starting a throwaway one
#        TUFA_TEST_TIMEOUT  limit for the test step in seconds (default 3000)
#        SOFTHSM2_CONF  ignored: the tests always get a throwaway SoftHSM config and token directory
#        TUFA_FUZZ_SECONDS  seconds per cargo-fuzz target in the fuzz step (default 20; 0 skips it)
# Exit status: 0 when every step passed, else the exit status of the first failing step.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

started=$SECONDS

die() {
  echo "scripts/test.sh: $*" >&2
  exit 1
}

# --- System tools -------------------------------------------------------------------------
# notary/notary-server drive and serve the black-box flows, softhsm2 backs the HSM tests,
# openssl makes test certificates, PostgreSQL runs the throwaway cluster, docker-registry (Docker
# distribution 2.8) checks that Tufa's builtin tokens work for a real registry, and the Docker CLI
# runs `docker trust` against the trust server. The enforcement tests (tests/tests/enforce_*.rs, run
# as root) start private Docker daemons (dockerd 20.10 from docker.io) with Tufa's authorization
# plugin, run podman 4.3 through scripts/hpc/tufa-podman (which reads answers with jq), and a
# one-node Slurm 22.05 cluster (munged, slurmctld, slurmd, srun/sbatch) with scripts/hpc/slurm-prolog.sh.
command -v cargo >/dev/null 2>&1 || die "cargo is not installed (install Rust 1.95, e.g. with rustup)"

missing_packages=()
need() { # need <command> <debian package>
  command -v "$1" >/dev/null 2>&1 || missing_packages+=("$2")
}
need notary notary
need notary-server notary
need softhsm2-util softhsm2
need openssl openssl
need docker-registry docker-registry
need docker docker.io
need dockerd docker.io
need podman podman
need jq jq
need munged munge
need slurmctld slurmctld
need slurmd slurmd
need srun slurm-client
need psql postgresql-client
need curl curl
# The manifest check makes a Python virtualenv (Debian splits venv out of python3).
if ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
  missing_packages+=(python3-venv)
fi
if [ -z "${PG_BINDIR:-}" ] && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  missing_packages+=(postgresql)
fi
if [ "${#missing_packages[@]}" -gt 0 ]; then
  # The same package may be listed twice (notary, notary-server); apt does not mind.
  if [ "$(id -u)" -ne 0 ]; then
    die "missing system packages: ${missing_packages[*]}. Install them as root: apt-get install -y ${missing_packages[*]}"
  fi
  echo "==> installing missing packages: ${missing_packages[*]}"
  apt-get update
  DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing_packages[@]}"
fi

# --- Clean-up of everything started below ------------------------------------------------
pg_started=no
softhsm_dir=""
cleanup() {
  if [ "$pg_started" = yes ]; then
    pg_throwaway_stop
    pg_started=no
  fi
  if [ -n "$softhsm_dir" ]; then
    rm -rf -- "$softhsm_dir"
    softhsm_dir=""
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# --- Throwaway SoftHSM token directory ----------------------------------------------------
# The PKCS#11 tests (signer/tests/pkcs11.rs and the SoftHSM variants in tests/tests/signer_*.rs)
# create their tokens in the directory SOFTHSM2_CONF names, never in the system's token
# directory. Always a fresh, empty one: an inherited SOFTHSM2_CONF is ignored.
softhsm_dir="$(mktemp -d "${TMPDIR:-/tmp}/tufa-softhsm.XXXXXX")"
mkdir "$softhsm_dir/tokens"
cat >"$softhsm_dir/softhsm2.conf" <<EOF
directories.tokendir = $softhsm_dir/tokens
objectstore.backend = file
log.level = ERROR
slots.removable = false
EOF
export SOFTHSM2_CONF="$softhsm_dir/softhsm2.conf"

# --- Throwaway PostgreSQL -----------------------------------------------------------------
if [ -n "${DATABASE_URL:-}" ]; then
  database_note="DATABASE_URL from the environment"
else
  # shellcheck source=scripts/pg-throwaway.sh
  source "$repo_root/scripts/pg-throwaway.sh"
  pg_throwaway_start
  pg_started=yes
  database_note="throwaway PostgreSQL on port $PGPORT"
fi

# --- Steps --------------------------------------------------------------------------------
summary=()
status=0

# run_step <name> <command...>: runs the command, records the outcome, keeps going.
run_step() {
  local name="$1"
  shift
  local step_started=$SECONDS step_status=0
  echo "==> $name: $*"
  "$@" || step_status=$?
  local took=$((SECONDS - step_started))
  if [ "$step_status" -eq 0 ]; then
    summary+=("ok      ${took}s  $name")
  else
    summary+=("FAILED  ${took}s  $name (exit $step_status)")
    if [ "$status" -eq 0 ]; then
      status=$step_status
    fi
  fi
  return "$step_status"
}

# run_logged <log> <command...>: runs the command with its output copied to <log>; keeps its status.
run_logged() {
  local log="$1"
  shift
  "$@" 2>&1 | tee "$log"
}

skip_step() {
  summary+=("skipped      $1 ($2)")
}

run_step "format" cargo fmt --all -- --check || true
run_step "clippy" cargo clippy --workspace --all-targets --locked -- -D warnings || true
test_timeout="${TUFA_TEST_TIMEOUT:-3000}"
# The black-box tests start target/debug/tufa-server, so build the whole workspace first;
# --all-targets builds with the same feature set as the test run, so nothing is built twice.
if run_step "build" cargo build --workspace --all-targets --locked; then
  if cargo nextest --version >/dev/null 2>&1; then
    # The test output goes to the terminal and to a log; the summary repeats the tests that
    # failed, so they are named even where only the end of the output is kept (CI).
    test_log="$(mktemp)"
    run_step "tests (nextest)" run_logged "$test_log" timeout --kill-after=30 "$test_timeout" \
      cargo nextest run --workspace --locked --no-fail-fast || true
    failed_tests="$(grep -aE '^[[:space:]]*(FAIL|TIMEOUT|SIGSEGV|SIGABRT|SIGKILL|SIGTERM|ABORT|LEAK-FAIL) \[' "$test_log" | sed 's/^[[:space:]]*//' | sort -u || true)"
    rm -f "$test_log"
  else
    echo "cargo-nextest is not installed; falling back to cargo test"
    run_step "tests (cargo test)" timeout --kill-after=30 "$test_timeout" \
      cargo test --workspace --locked --no-fail-fast || true
  fi
else
  skip_step "tests" "the build failed"
fi

# --- Kubernetes manifests -------------------------------------------------------------------
# deploy/kubernetes/ checked with PyPI kubernetes-validate (installed once into a virtualenv under
# target/) and the webhook properties a schema cannot express (fail closed, AdmissionReview v1,
# every kind that runs containers on CREATE and UPDATE).
run_step "kubernetes manifests" scripts/check-kubernetes-manifests.sh || true

# --- Fuzzing: a short bounded run of every cargo-fuzz target ---------------------------------
# The targets live in fuzz/ (their own workspace, nightly toolchain). Each runs for
# TUFA_FUZZ_SECONDS (default 20) over the committed seeds in fuzz/corpus/<target>; new inputs go
# to target/fuzz-corpus/<target>, so the committed corpus stays small. Set TUFA_FUZZ_SECONDS=0
# to skip.
fuzz_seconds="${TUFA_FUZZ_SECONDS:-20}"
fuzz_all() {
  command -v cargo-fuzz >/dev/null 2>&1 || cargo +nightly install cargo-fuzz --locked || return $?
  local target
  for target in metadata canonical validate multipart; do
    mkdir -p "target/fuzz-corpus/$target"
    cargo +nightly fuzz run "$target" "target/fuzz-corpus/$target" "fuzz/corpus/$target" -- \
      -max_total_time="$fuzz_seconds" -rss_limit_mb=2048 || return $?
  done
}
if [ "$fuzz_seconds" = 0 ]; then
  skip_step "fuzz" "TUFA_FUZZ_SECONDS=0"
elif ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  run_step "fuzz" sh -c 'echo "the nightly toolchain is missing: rustup toolchain install nightly" >&2; exit 1' || true
else
  run_step "fuzz (${fuzz_seconds}s per target)" fuzz_all || true
fi

# --- Summary ------------------------------------------------------------------------------
echo
echo "==> summary (${database_note}; $((SECONDS - started))s in total)"
for line in "${summary[@]}"; do
  echo "    $line"
done
if [ -n "${failed_tests:-}" ]; then
  echo "==> tests that failed"
  while IFS= read -r line; do
    echo "    $line"
  done <<<"$failed_tests"
fi
if [ "$status" -eq 0 ]; then
  echo "==> all steps passed"
else
  echo "==> FAILED (exit $status)"
fi
exit "$status"
