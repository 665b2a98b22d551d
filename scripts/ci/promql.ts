/**
 * The metric names a PromQL expression selects, and the metrics that come from exporters
 * other than Loanbook. Shared by test/deploy/monitoring.test.ts (every name is exported)
 * and scripts/ci/prometheus-live.ts (every name an alert uses has data).
 */

/**
 * Metrics that other exporters provide, by exporter. Nothing else may be queried without
 * Loanbook exporting it.
 */
export const EXTERNAL_METRICS: Readonly<Record<string, string>> = {
  // kube-state-metrics: the guide's PodCrashLooping.
  kube_pod_container_status_restarts_total: 'kube-state-metrics',
  // cAdvisor (the kubelet's /metrics/cadvisor): the guide's HighMemoryUsage.
  container_memory_usage_bytes: 'cAdvisor',
  container_spec_memory_limit_bytes: 'cAdvisor',
  // Prometheus itself, per scrape target: LoanbookTargetDown.
  up: 'Prometheus (scrape health)',
};

/** PromQL functions, aggregation operators and keywords: identifiers that are never metric names. */
const KEYWORDS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right', 'bool', 'and', 'or', 'unless', 'offset', 'inf', 'nan', 'atan2']);
/** Keywords whose parenthesised list holds label names. */
const LABEL_LISTS = new Set(['by', 'without', 'on', 'ignoring', 'group_left', 'group_right']);

/**
 * The metric names a PromQL expression selects: identifiers used as a vector selector
 * (followed by `{`, `[` or nothing), and `__name__` matchers. Skips strings, label
 * matchers' contents, range and subquery brackets, numbers and durations, function and
 * aggregation names (followed by `(`), keywords and the label lists of by/without/on/
 * ignoring/group_left/group_right, and Grafana variables ($x, ${x}).
 */
export function metricNames(expr: string): Set<string> {
  const names = new Set<string>();
  let i = 0;
  const n = expr.length;
  const skipString = (quote: string) => {
    i++;
    while (i < n && expr[i] !== quote) i += expr[i] === '\\' ? 2 : 1;
    i++;
  };
  while (i < n) {
    const c = expr[i]!;
    if (c === '"' || c === "'" || c === '`') {
      skipString(c);
    } else if (c === '#') {
      while (i < n && expr[i] !== '\n') i++;
    } else if (c === '{') {
      // Label matchers: only a __name__ matcher names a metric.
      const start = i;
      while (i < n && expr[i] !== '}') {
        if (expr[i] === '"' || expr[i] === "'" || expr[i] === '`') skipString(expr[i]!);
        else i++;
      }
      const body = expr.slice(start + 1, i);
      for (const m of body.matchAll(/__name__\s*=\s*["'`]([a-zA-Z_:][a-zA-Z0-9_:]*)["'`]/g)) names.add(m[1]!);
      i++;
    } else if (c === '[') {
      while (i < n && expr[i] !== ']') i++;
      i++;
    } else if (c === '$') {
      i++;
      if (expr[i] === '{') while (i < n && expr[i] !== '}') i++;
      else while (i < n && /[a-zA-Z0-9_]/.test(expr[i]!)) i++;
      i++;
    } else if (/[0-9.]/.test(c)) {
      // Numbers (1, 0.95, 1e9, 0x1f) and durations (5m, 1h30m).
      while (i < n && /[0-9a-zA-Z_.]/.test(expr[i]!)) {
        if ((expr[i] === 'e' || expr[i] === 'E') && /[+-]/.test(expr[i + 1] ?? '')) i++;
        i++;
      }
    } else if (/[a-zA-Z_:]/.test(c)) {
      const start = i;
      while (i < n && /[a-zA-Z0-9_:]/.test(expr[i]!)) i++;
      const word = expr.slice(start, i);
      let j = i;
      while (j < n && /\s/.test(expr[j]!)) j++;
      const next = expr[j];
      if (LABEL_LISTS.has(word.toLowerCase())) {
        if (next === '(') {
          i = expr.indexOf(')', j) + 1;
          if (i === 0) throw new Error(`unclosed ${word}( in ${expr}`);
        }
      } else if (KEYWORDS.has(word.toLowerCase()) || next === '(' || /^(by|without)\s*\(/i.test(expr.slice(j))) {
        // a keyword, a function, or an aggregation operator (`sum (…) by (…)` or `sum by (…) (…)`)
      } else {
        names.add(word);
      }
    } else {
      i++;
    }
  }
  return names;
}
