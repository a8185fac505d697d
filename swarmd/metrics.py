"""Prometheus metrics of swarmd: counters fed by the shell, gauges read from the state at
scrape time (so they can never disagree with it)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

if TYPE_CHECKING:
    from swarmd.service import Orchestrator


class _StateCollector:
    def __init__(self, orch: Orchestrator) -> None:
        self.orch = orch

    def collect(self) -> Iterator[GaugeMetricFamily]:
        st = self.orch.state
        q = GaugeMetricFamily("swarm_queue_entries", "queue entries by state", labels=["state"])
        for k, v in st.counts.items():
            q.add_metric([k], v)
        yield q
        d = GaugeMetricFamily("swarm_drones", "drones by status", labels=["status"])
        by: dict[str, int] = {"ready": 0, "building": 0, "degraded": 0, "offline": 0}
        for drone in st.drones.values():
            by[self.orch.soft.status(drone.id)] += 1
        for k, v in by.items():
            d.add_metric([k], v)
        yield d
        r = GaugeMetricFamily("swarm_builds", "finished builds by result", labels=["result"])
        res: dict[str, int] = {}
        for b in st.builds.values():
            if b.result:
                res[b.result] = res.get(b.result, 0) + 1
        for k, v in sorted(res.items()):
            r.add_metric([k], v)
        yield r
        j = self.orch.committer.journal
        yield GaugeMetricFamily("swarm_journal_bytes", "bytes in the open journal segment",
                                value=j.bytes if j else 0)
        late = GaugeMetricFamily("swarm_heartbeat_age_seconds",
                                 "seconds since each online drone's last heartbeat",
                                 labels=["drone"])
        now = self.orch.wall()
        for drone in st.drones.values():
            s = self.orch.soft.get(drone.id)
            if drone.online and s is not None:
                late.add_metric([drone.name], max(0.0, now - s.last_beat_wall))
        yield late
        yield GaugeMetricFamily("swarm_event_subscribers", "connected event stream consumers",
                                value=len(self.orch.hub.subscribers))


class Metrics:
    def __init__(self, orch: Orchestrator) -> None:
        self.registry = CollectorRegistry()
        self.journal_appends = Counter("swarm_journal_appends", "events appended to the journal",
                                       registry=self.registry)
        self.fsync_seconds = Histogram(
            "swarm_journal_fsync_seconds", "write+fsync latency of one group commit",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
            registry=self.registry)
        self.build_seconds = Histogram(
            "swarm_build_duration_seconds", "duration of finished builds as drones report it",
            ["result"], buckets=(10, 30, 60, 120, 300, 600, 1200, 3600, 7200, 14400), registry=self.registry)
        self.submissions = Counter("swarm_submissions", "accepted submissions",
                                   registry=self.registry)
        self.auth_failures = Counter("swarm_auth_failures", "requests refused for a bad token",
                                     ["kind"], registry=self.registry)
        self.registry.register(_StateCollector(orch))

        def on_batch(n: int, seconds: float) -> None:
            self.journal_appends.inc(n)
            self.fsync_seconds.observe(seconds)

        orch.committer.on_batch = on_batch

    def render(self) -> tuple[bytes, str]:
        return generate_latest(self.registry), CONTENT_TYPE_LATEST
