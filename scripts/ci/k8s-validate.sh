#!/usr/bin/env bash
# Validates deploy/k8s: every document against the Kubernetes 1.27 OpenAPI schemas
# (kubernetes-models), the deployment policy (scripts/ci/k8s-checks.ts: security context,
# probes, rollout, graceful stop, env names, Secret placeholders, NetworkPolicy/HPA/PDB/
# Service/Ingress cross-references, kustomizations) and, when kubectl is on PATH, that
# `kubectl kustomize` renders each kustomization. Needs node_modules (npm ci).
# Usage: bash scripts/ci/k8s-validate.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
exec node_modules/.bin/tsx scripts/ci/k8s-validate.ts deploy/k8s
