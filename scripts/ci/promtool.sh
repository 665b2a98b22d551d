#!/usr/bin/env bash
# Checks deploy/monitoring with promtool (Debian's `prometheus` package):
#   - prometheus-compose.yml and prometheus.yml are valid configurations;
#   - alerts.yml is a valid rule file;
#   - alerts.test.yml's unit tests pass (each alert fires, and stays quiet short of it).
# Debian builds Prometheus without Kubernetes service discovery, so its promtool refuses
# `kubernetes_sd_configs`. prometheus.yml is therefore checked as written with an upstream
# promtool when one is on PATH, and otherwise with each kubernetes_sd_configs block
# replaced by a static target (everything else, relabelling included, is checked as is);
# the Kubernetes blocks themselves are checked by test/deploy/monitoring.test.ts.
# Usage: scripts/ci/promtool.sh   (from anywhere; needs node_modules for the `yaml` package)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
mon="$root/deploy/monitoring"
PROMTOOL="${PROMTOOL:-promtool}"
command -v "$PROMTOOL" >/dev/null || { echo "promtool not found (apt-get install prometheus)" >&2; exit 1; }
"$PROMTOOL" --version 2>&1 | head -1

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== promtool check config prometheus-compose.yml"
"$PROMTOOL" check config "$mon/prometheus-compose.yml"

echo "== promtool check config prometheus.yml"
cp "$mon/prometheus.yml" "$mon/alerts.yml" "$tmp/"
if ! "$PROMTOOL" check config "$tmp/prometheus.yml" 2>"$tmp/err"; then
  if grep -q 'field kubernetes_sd_configs not found' "$tmp/err"; then
    echo "   (this promtool has no Kubernetes discovery: checking with static targets in its place)"
    mkdir -p "$tmp/serviceaccount"
    echo stand-in-token >"$tmp/serviceaccount/token"
    : >"$tmp/serviceaccount/ca.crt"
    (cd "$root" && node --input-type=module -e '
      import { readFileSync, writeFileSync } from "node:fs";
      import YAML from "yaml";
      const file = process.argv[1];
      const doc = YAML.parse(readFileSync(file, "utf8"));
      let replaced = 0;
      for (const job of doc.scrape_configs ?? []) {
        if (!job.kubernetes_sd_configs) continue;
        delete job.kubernetes_sd_configs;
        job.static_configs = [{ targets: ["kubernetes-sd.invalid:9464"] }];
        replaced++;
      }
      if (replaced === 0) throw new Error("no kubernetes_sd_configs to replace");
      // The in-cluster service-account files do not exist here: point at stand-ins.
      const sa = "/var/run/secrets/kubernetes.io/serviceaccount/";
      const standIn = process.argv[2];
      const swap = (o) => {
        for (const [k, v] of Object.entries(o ?? {})) {
          if (typeof v === "string" && v.startsWith(sa)) o[k] = standIn + "/" + v.slice(sa.length);
          else if (v && typeof v === "object") swap(v);
        }
      };
      swap(doc);
      writeFileSync(file, YAML.stringify(doc));
      console.log(`   ${replaced} kubernetes_sd_configs block(s) replaced`);
    ' "$tmp/prometheus.yml" "$tmp/serviceaccount")
    "$PROMTOOL" check config "$tmp/prometheus.yml"
  else
    cat "$tmp/err" >&2
    exit 1
  fi
fi

echo "== promtool check rules alerts.yml"
"$PROMTOOL" check rules "$mon/alerts.yml"

echo "== promtool test rules alerts.test.yml"
"$PROMTOOL" test rules "$mon/alerts.test.yml"

alerts="$(grep -c '^ *- alert:' "$mon/alerts.yml")"
cases="$(grep -c 'alertname:' "$mon/alerts.test.yml")"
echo "promtool: OK (2 configs, ${alerts} alerts, ${cases} alert test cases)"
