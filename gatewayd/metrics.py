"""gatewayd's Prometheus metrics, in a registry of their own (one per Gateway, so tests can build
many). Served as text on the admin listener's ``/metrics``."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.orchestrator_up = Gauge(
            "gatewayd_orchestrator_up", "1 while the orchestrator is up", registry=r)
        self.probe_failures = Gauge(
            "gatewayd_orchestrator_consecutive_failures",
            "current failure streak of probes and forwarded calls", registry=r)
        self.cache_hits = Counter(
            "gatewayd_cache_hits", "public responses served from the cache", ["route"], registry=r)
        self.cache_misses = Counter(
            "gatewayd_cache_misses", "public responses that needed a backend fetch", ["route"],
            registry=r)
        self.backend_calls = Counter(
            "gatewayd_backend_calls", "calls made to swarmd", ["path", "outcome"], registry=r)
        self.spool_depth = Gauge(
            "gatewayd_spool_depth", "submissions held in the spool", registry=r)
        self.spool_bytes = Gauge("gatewayd_spool_bytes", "bytes held in the spool", registry=r)
        self.spool_dead = Counter(
            "gatewayd_spool_dead_letters", "spooled submissions refused by swarmd", registry=r)
        self.admin_auth_failures = Counter(
            "gatewayd_admin_auth_failures", "admin calls refused (401 or 429)", ["reason"],
            registry=r)
        self.sanitizer_refusals = Counter(
            "gatewayd_sanitizer_refusals", "public payloads refused by the leak check", registry=r)
        # Set by the WebSocket hub (gatewayd.push).
        self.ws_clients = Gauge(
            "gatewayd_ws_clients", "connected /ws/build-status clients", registry=r)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))
