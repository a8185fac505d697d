"""The gateway's calls to swarmd: one shared httpx client, a deadline at every call site, and
every outcome reported to the probe (a failed forwarded call counts like a failed probe).

Nothing here logs an address or an exception's text: those can hold real host names, and the
public path's log lines must not (see docs/GATEWAY.md).
"""

from __future__ import annotations

import json
import logging
from typing import Any

import httpx
import trio

from gatewayd.metrics import Metrics
from gatewayd.probe import Probe

log = logging.getLogger("gatewayd.upstream")


class UpstreamError(Exception):
    """swarmd did not give a usable answer. ``why`` is safe to log (no addresses)."""

    def __init__(self, path: str, why: str, status: int | None = None) -> None:
        self.path = path
        self.why = why
        self.status = status
        super().__init__(f"{path}: {why}")


class Upstream:
    def __init__(
        self,
        http: httpx.AsyncClient,
        base_url: str,
        *,
        control_token: str,
        probe: Probe,
        metrics: Metrics,
        timeout_s: float,
    ) -> None:
        self.http = http
        self.base_url = base_url.rstrip("/")
        self.control_token = control_token
        self.probe = probe
        self.metrics = metrics
        self.timeout_s = timeout_s

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = dict(extra or {})
        if self.control_token:
            headers["Authorization"] = f"Bearer {self.control_token}"
        return headers

    async def get_json(self, path: str) -> Any:
        """Checkpoint. GET ``path`` and decode it; raises UpstreamError."""
        resp = await self.request("GET", path)
        if resp is None:
            raise UpstreamError(path, "unreachable")
        if resp.status_code != 200:
            raise UpstreamError(path, f"HTTP {resp.status_code}", resp.status_code)
        try:
            return json.loads(resp.content)
        except ValueError:
            raise UpstreamError(path, "answer is not JSON", resp.status_code) from None

    async def request(
        self,
        method: str,
        path: str,
        *,
        query: bytes = b"",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response | None:
        """Checkpoint. One call to swarmd within ``timeout_s``; None if swarmd was not reached
        (refused, reset, timed out). A 5xx answer counts as a failure for the probe too."""
        url = self.base_url + path
        if query:
            url += "?" + query.decode("latin-1")
        resp: httpx.Response | None = None
        why = "timeout"
        with trio.move_on_after(self.timeout_s):
            try:
                resp = await self.http.request(
                    method, url, content=body, headers=self._headers(headers)
                )
            except httpx.HTTPError as exc:
                why = type(exc).__name__
        if resp is None:
            self.metrics.backend_calls.labels(path=_label(path), outcome="unreachable").inc()
            log.warning("call to orchestrator failed: %s %s (%s)", method, _label(path), why)
            self.probe.failure(why)
            return None
        if resp.status_code >= 500:
            self.metrics.backend_calls.labels(path=_label(path), outcome="5xx").inc()
            self.probe.failure(f"HTTP {resp.status_code}")
        else:
            self.metrics.backend_calls.labels(path=_label(path), outcome="ok").inc()
            self.probe.success()
        return resp


def _label(path: str) -> str:
    """A low-cardinality label: ids replaced by ``{id}``."""
    parts = path.split("?", 1)[0].split("/")
    known = {"", "api", "status", "drones", "queue", "builds", "config", "logs", "restart",
             "packages", "requests"}
    return "/".join(p if p in known else "{id}" for p in parts)
