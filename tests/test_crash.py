"""The real swarmd, SIGKILLed at random moments while a client submits: nothing acknowledged
is lost, nothing is queued twice."""

from __future__ import annotations

import random
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import SwarmdProc

pytestmark = pytest.mark.slow


def _submitter(url: str, start: int, acked: dict[str, list[str]], stop: threading.Event) -> None:
    n = start
    with httpx.Client(timeout=5.0) as c:
        while not stop.is_set():
            rid = f"req-{n}"
            pkgs = [f"=cat-{n % 7}/pkg{n}-{i}.0" for i in range(1, 6)]
            pkgs.append("=sys-libs/shared-1.0")  # shared by every request: merged, never twice
            try:
                r = c.post(url + "/api/queue", json={"packages": pkgs, "request_id": rid})
            except httpx.HTTPError:
                return
            if r.status_code in (200, 202):
                acked[rid] = [p[1:] for p in pkgs]
            else:
                raise AssertionError(f"unexpected {r.status_code}: {r.text}")
            n += 1


def test_sigkill_loop_loses_nothing(tmp_path: Path) -> None:
    rng = random.Random(20261126)
    state = tmp_path / "state"
    acked: dict[str, list[str]] = {}
    counter = 0
    kills = 0
    for _round in range(20):
        p = SwarmdProc(state, tmp_path / "swarmd.log").start()
        stop = threading.Event()
        t = threading.Thread(target=_submitter, args=(p.url, counter, acked, stop))
        t.start()
        time.sleep(rng.uniform(0.05, 0.5))
        p.kill9()
        kills += 1
        stop.set()
        t.join(10)
        counter += 10000
    assert kills >= 20
    assert len(acked) > 40, "the client hardly got anything acknowledged"
    p = SwarmdProc(state, tmp_path / "swarmd.log").start()
    try:
        q = httpx.get(p.url + "/api/queue", timeout=10).json()["entries"]
        cpvs = [e["cpv"] for e in q]
        assert len(cpvs) == len(set(cpvs)), "a package was queued twice"
        by_cpv = {e["cpv"]: e for e in q}
        for rid, pkgs in acked.items():
            r = httpx.get(f"{p.url}/api/requests/{rid}", timeout=10)
            assert r.status_code == 200, f"acknowledged request {rid} was lost"
            for cpv in pkgs:
                assert cpv in by_cpv, f"{cpv} of acknowledged {rid} was lost"
                assert rid in by_cpv[cpv]["requests"]
    finally:
        assert p.stop() == 0
    log = (tmp_path / "swarmd.log").read_text()
    assert "Traceback" not in log
