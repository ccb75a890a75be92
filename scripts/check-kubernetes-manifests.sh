#!/usr/bin/env bash
# Checks the Kubernetes manifests in deploy/kubernetes/: schema validation with PyPI kubernetes-validate (strict:
# unknown fields are errors), then the properties the schema cannot express: both webhooks fail closed
# (failurePolicy Fail), have no side effects, speak AdmissionReview v1 only, call /validate and /mutate, and cover
# CREATE and UPDATE of every kind that runs containers.
#
# Usage: scripts/check-kubernetes-manifests.sh
# The validator is installed into a virtualenv at $TUFA_KV_VENV (default: target/kubernetes-validate-venv).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
venv="${TUFA_KV_VENV:-$root/target/kubernetes-validate-venv}"
if [[ ! -x "$venv/bin/kubernetes-validate" ]]; then
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet "kubernetes-validate==1.37.0"
fi

"$venv/bin/kubernetes-validate" --strict --quiet "$root"/deploy/kubernetes/*.yaml

"$venv/bin/python" - "$root/deploy/kubernetes/webhooks.yaml" <<'PY'
import sys
import yaml

expected_rules = {
    ("", "pods"), ("", "pods/ephemeralcontainers"), ("", "replicationcontrollers"),
    ("apps", "deployments"), ("apps", "statefulsets"), ("apps", "daemonsets"), ("apps", "replicasets"),
    ("batch", "jobs"), ("batch", "cronjobs"),
}
documents = [document for document in yaml.safe_load_all(open(sys.argv[1])) if document]
paths = {"ValidatingWebhookConfiguration": "/validate", "MutatingWebhookConfiguration": "/mutate"}
problems = []
seen = set()
for document in documents:
    kind = document["kind"]
    seen.add(kind)
    for webhook in document["webhooks"]:
        name = webhook["name"]
        if webhook.get("failurePolicy") != "Fail":
            problems.append(f"{name}: failurePolicy must be Fail (fail closed)")
        if webhook.get("sideEffects") != "None":
            problems.append(f"{name}: sideEffects must be None")
        if webhook.get("admissionReviewVersions") != ["v1"]:
            problems.append(f"{name}: admissionReviewVersions must be [v1]")
        if webhook["clientConfig"]["service"]["path"] != paths[kind]:
            problems.append(f"{name}: path must be {paths[kind]}")
        covered = set()
        for rule in webhook["rules"]:
            if sorted(rule["operations"]) != ["CREATE", "UPDATE"]:
                problems.append(f"{name}: operations must be CREATE and UPDATE")
            for group in rule["apiGroups"]:
                for resource in rule["resources"]:
                    covered.add((group, resource))
        missing = expected_rules - covered
        if missing:
            problems.append(f"{name}: rules miss {sorted(missing)}")
if seen != set(paths):
    problems.append(f"expected one of each of {sorted(paths)}, found {sorted(seen)}")
if problems:
    print("\n".join(problems), file=sys.stderr)
    sys.exit(1)
print("webhook configurations: fail closed, no side effects, AdmissionReview v1, every kind on CREATE and UPDATE")
PY
