#!/bin/bash
# slurm-prolog.sh: a Slurm prolog that fails a job whose container image the Tufa trust policy does not allow.
#
# Install it as PrologSlurmctld (recommended: a failure cancels or requeues the job and leaves the node alone) or
# as Prolog (slurmd; a failing Prolog drains the node). See docs/hpc.md.
#
# The image comes from, in this order:
#   1. TUFA_IMAGE in the prolog's environment (set by a SPANK plugin or a site wrapper; Slurm does not pass the
#      job's own environment to prologs);
#   2. `image=REF` in the job's comment (`sbatch --comment image=registry.example.com/app:v1`), read from
#      SLURM_JOB_COMMENT when Slurm sets it, else from `scontrol show job $SLURM_JOB_ID`.
# A job that names no image is not a container job: it passes, unless TUFA_REQUIRE_IMAGE=1.
#
# Exit status: 0 the job may run; 1 the image is denied (or missing with TUFA_REQUIRE_IMAGE=1); 2 trust could not
# be decided or the check itself failed. The reason goes to standard error (the slurmctld or slurmd log) and to
# syslog (tag tufa-prolog) when `logger` exists.
#
# Environment (Slurm gives prologs no PATH; set these in the script's environment or rely on the defaults):
#   TUFA_POLICY        the trust policy (default /etc/tufa/policy.toml)
#   TUFA_SERVER_BIN    tufa-server (default /usr/local/bin/tufa-server)
#   TUFA_STATE_DIR     the verifier's state and cache directory (default: the policy's, else /var/lib/tufa/verify)
#   SCONTROL_BIN       scontrol (default: scontrol from PATH)
#   TUFA_PROLOG_LOG    a file each message is also appended to
#   TUFA_CANCEL_DENIED 1: cancel a denied job with scancel (Slurm requeues a batch job whose PrologSlurmctld failed,
#                      and checks it again when it is next scheduled; cancelling ends it for good). A cancel sent
#                      while the prolog runs can be undone by that requeue, so a detached watcher cancels the job
#                      again once it is pending, for up to TUFA_CANCEL_WAIT seconds (default 120)
#   SCANCEL_BIN        scancel (default: scancel from PATH)
set -uo pipefail
PATH="${PATH:-/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin}"

readonly EXIT_DENIED=1
readonly EXIT_ERROR=2

job="${SLURM_JOB_ID:-${SLURM_JOBID:-}}"

say() {
  echo "tufa-prolog: job ${job:-?}: $*" >&2
  if [ -n "${TUFA_PROLOG_LOG:-}" ]; then
    echo "tufa-prolog: job ${job:-?}: $*" >>"$TUFA_PROLOG_LOG" || true
  fi
  if command -v logger >/dev/null 2>&1; then
    logger -t tufa-prolog -- "job ${job:-?}: $*" 2>/dev/null || true
  fi
}

# The value of `image=` in a comment (words separated by spaces, commas or semicolons); empty when absent.
image_in_comment() {
  local word
  for word in ${1//[,;]/ }; do
    case "$word" in
      image=*)
        echo "${word#image=}"
        return
        ;;
    esac
  done
}

# The job's state (JobState=...), empty when scontrol cannot show it.
job_state() {
  "${SCONTROL_BIN:-scontrol}" show job --oneliner "$1" 2>/dev/null | sed -n 's/.* JobState=\([A-Z_]*\).*/\1/p'
}

# Cancels job $1 once Slurm has requeued it (it is PENDING again), or gives up when it ends otherwise or after
# TUFA_CANCEL_WAIT seconds (default 120).
cancel_when_requeued() {
  local waited=0 state
  while [ "$waited" -lt "${TUFA_CANCEL_WAIT:-120}" ]; do
    state="$(job_state "$1")"
    case "$state" in
      PENDING | REQUEUE_HOLD | SUSPENDED)
        "${SCANCEL_BIN:-scancel}" "$1" >/dev/null 2>&1 || true
        ;;
      "" | CANCELLED | COMPLETED | FAILED | TIMEOUT | NODE_FAIL | PREEMPTED | BOOT_FAIL | DEADLINE | OUT_OF_MEMORY)
        return 0
        ;;
    esac
    sleep 1
    waited=$((waited + 1))
  done
}

# With TUFA_CANCEL_DENIED=1, cancels the denied job (a requeued batch job would otherwise be checked again later).
# Slurm requeues a batch job after this prolog exits non-zero, and a cancel that reaches slurmctld while the prolog
# still runs can be undone by that requeue (seen on a loaded machine: the job ended PENDING). So the job is cancelled
# now, and again by a detached watcher once it is pending after the requeue.
cancel_denied() {
  if [ "${TUFA_CANCEL_DENIED:-0}" = 1 ] && [ -n "$job" ]; then
    if ! cancelled="$("${SCANCEL_BIN:-scancel}" "$job" 2>&1)"; then
      say "could not cancel the denied job: $cancelled"
    fi
    # Its own session and no inherited output, so slurmctld neither waits for it nor kills it with the prolog.
    if command -v setsid >/dev/null 2>&1; then
      setsid "$0" --cancel-when-requeued "$job" </dev/null >/dev/null 2>&1 &
    else
      "$0" --cancel-when-requeued "$job" </dev/null >/dev/null 2>&1 &
    fi
  fi
}

if [ "${1:-}" = --cancel-when-requeued ] && [ -n "${2:-}" ]; then
  cancel_when_requeued "$2"
  exit 0
fi

image="${TUFA_IMAGE:-}"
if [ -z "$image" ]; then
  if [ -n "${SLURM_JOB_COMMENT+set}" ]; then
    comment="$SLURM_JOB_COMMENT"
  elif [ -n "$job" ]; then
    if ! shown="$("${SCONTROL_BIN:-scontrol}" show job --oneliner "$job" 2>&1)"; then
      say "cannot read the job's comment with scontrol: $shown"
      exit "$EXIT_ERROR"
    fi
    # Comment= is followed by the next field (" Key="), or ends the line.
    comment="$(sed -n 's/.* Comment=\(.*\)$/\1/p' <<<"$shown" | sed 's/ [A-Za-z]*=.*$//')"
    [ "$comment" != "(null)" ] || comment=""
  else
    comment=""
  fi
  image="$(image_in_comment "$comment")"
fi

if [ -z "$image" ]; then
  if [ "${TUFA_REQUIRE_IMAGE:-0}" = 1 ]; then
    say "denied: the job names no container image (TUFA_IMAGE or --comment image=...) and TUFA_REQUIRE_IMAGE=1"
    cancel_denied
    exit "$EXIT_DENIED"
  fi
  exit 0
fi

verify_args=(verify "$image" --policy "${TUFA_POLICY:-/etc/tufa/policy.toml}")
if [ -n "${TUFA_STATE_DIR:-}" ]; then
  verify_args+=(--state-dir "$TUFA_STATE_DIR")
fi
# The answer is the one line on standard output; the verifier's log lines go to standard error as they are.
answer="$("${TUFA_SERVER_BIN:-/usr/local/bin/tufa-server}" "${verify_args[@]}")"
status=$?
case "$status" in
  0)
    say "$answer"
    exit 0
    ;;
  1)
    say "$answer"
    cancel_denied
    exit "$EXIT_DENIED"
    ;;
  *)
    say "image $image could not be verified (tufa-server verify exited $status): $answer"
    exit "$EXIT_ERROR"
    ;;
esac
