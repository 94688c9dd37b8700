"""The gateway's Prometheus metrics, on a registry of its own (one per app, no globals).

Every stage increments what it owns; `/metrics` renders the registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter("gateway_requests", "Requests by endpoint, model, deployment "
                                "and HTTP status", ["endpoint", "model", "deployment", "status"],
                                registry=r)
        self.latency = Histogram("gateway_request_latency_seconds", "Request latency",
                                 ["endpoint", "model", "deployment"], buckets=_LATENCY_BUCKETS,
                                 registry=r)
        self.tokens = Counter("gateway_tokens", "Tokens by model, deployment and direction",
                              ["model", "deployment", "direction"], registry=r)
        self.cost = Counter("gateway_cost_usd", "Cost in USD by model and deployment",
                            ["model", "deployment"], registry=r)
        self.errors = Counter("gateway_errors", "Error responses by code",
                              ["endpoint", "model", "code"], registry=r)
        self.limiter_rejections = Counter("gateway_limiter_rejections",
                                          "Requests refused by a limit or budget",
                                          ["scope", "reason"], registry=r)
        self.limiter_store_errors = Counter("gateway_limiter_store_errors",
                                            "Shared limiter store (Redis) failures; the "
                                            "fallback in limits.on_redis_error applied",
                                            registry=r)
        self.unpriced = Counter("gateway_unpriced_requests",
                                "Requests served by a model with no known price", ["model"],
                                registry=r)
        self.cache_requests = Counter("gateway_cache_requests",
                                      "Requests of routes with the response cache on, by "
                                      "model, team and cache status (HIT, MISS, BYPASS, "
                                      "REFRESH): the hit ratio", ["model", "team", "status"],
                                      registry=r)
        self.cache_saved = Counter("gateway_cache_saved_cost_usd",
                                   "What cache hits would have cost upstream, by model and team",
                                   ["model", "team"], registry=r)
        self.deployment_results = Counter("gateway_deployment_attempts",
                                          "Provider attempts by deployment and outcome",
                                          ["model", "deployment", "outcome"], registry=r)
        self.deployment_cooldowns = Counter("gateway_deployment_cooldowns",
                                            "Times a deployment was taken out of rotation",
                                            ["model", "deployment"], registry=r)
        self.audit_queue_depth = Gauge("gateway_audit_queue_depth",
                                       "Audit events waiting to be written", registry=r)
        self.audit_spool_bytes = Gauge("gateway_audit_spool_bytes",
                                       "Bytes held in the local audit spool", registry=r)
        self.audit_durable_wait = Histogram("gateway_audit_durable_wait_seconds",
                                            "Time a response was held until its audit event "
                                            "was on disk (one group commit)",
                                            buckets=(0.00025, 0.0005, 0.001, 0.0015, 0.002,
                                                     0.003, 0.005, 0.0075, 0.01, 0.02, 0.05,
                                                     0.1, 0.25, 1, 5), registry=r)
        self.audit_unavailable = Counter("gateway_audit_unavailable",
                                         "Requests refused because the audit record could not "
                                         "be made durable", registry=r)
        self.pii_findings = Counter("gateway_pii_findings", "PII found, by kind and action",
                                    ["kind", "action", "direction"], registry=r)
