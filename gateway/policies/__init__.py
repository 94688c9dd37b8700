"""Policy files (`policies/<name>.yaml`): which models, limits, budget, PII rules and audit
bodies apply to a key, resolved key -> team -> `default`."""
