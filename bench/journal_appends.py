"""Journal appends/s with group commit under 1, 10 and 100 concurrent writers.

    python -m bench.journal_appends [--seconds 4] [--writers 1,10,100]

An in-process ``Orchestrator`` (its real writer task: drain the channel, write, one fsync in a
worker thread, apply, wake every caller) over a real state directory on the repository's disk
(``.bench/``). N Trio tasks each commit small ``history`` events back to back for a fixed time.
Reported per N: events/s, fsyncs/s, events per fsync, and the commit latency (``commit()``
call to return, i.e. hand-over + write + fsync + apply) p50 / p99.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import trio

from bench.common import REPO, pct
from swarmd import journal_events as je
from swarmd.config import SwarmdConfig
from swarmd.service import Orchestrator


async def _measure(state_dir: Path, writers: int, seconds: float) -> dict[str, Any]:
    cfg = SwarmdConfig(state_dir=str(state_dir))
    orch = Orchestrator(cfg)
    orch.recover()
    assert orch.journal is not None
    lat: list[float] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(orch.run)

        async def writer(i: int, until: float) -> None:
            n = 0
            while time.perf_counter() < until:
                t0 = time.perf_counter()
                await orch.commit(je.History(ts=orch.wall(),
                                             packages={f"w{i}/p{n % 50}": 1.0}))
                lat.append(time.perf_counter() - t0)
                n += 1

        # Warm-up (thread pool, page cache), not counted.
        async with trio.open_nursery() as warm:
            for i in range(writers):
                warm.start_soon(writer, i, time.perf_counter() + 0.3)
        lat.clear()
        j = orch.journal
        a0, f0 = j.appends, j.fsyncs
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        async with trio.open_nursery() as work:
            for i in range(writers):
                work.start_soon(writer, i, t0 + seconds)
        elapsed = time.perf_counter() - t0
        cpu = time.process_time() - cpu0
        events, fsyncs = j.appends - a0, j.fsyncs - f0
        nursery.cancel_scope.cancel()
    orch.journal.close()
    return {
        "writers": writers, "seconds": round(elapsed, 2), "events": events, "fsyncs": fsyncs,
        "events_per_s": round(events / elapsed, 1), "fsyncs_per_s": round(fsyncs / elapsed, 1),
        "events_per_fsync": round(events / max(1, fsyncs), 2),
        "commit_ms": {"p50": round(pct(lat, 50) * 1000, 3), "p99": round(pct(lat, 99) * 1000, 3)},
        "cpu_pct": round(100 * cpu / elapsed, 1),
    }


def run(seconds: float = 4.0, writers: tuple[int, ...] = (1, 10, 100)) -> dict[str, Any]:
    (REPO / ".bench").mkdir(exist_ok=True)
    out: dict[str, Any] = {"seconds": seconds, "runs": []}
    for n in writers:
        tmp = Path(tempfile.mkdtemp(prefix=f"journal-{n}-", dir=REPO / ".bench"))
        try:
            out["runs"].append(trio.run(_measure, tmp / "state", n, seconds))
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--writers", default="1,10,100")
    a = p.parse_args()
    ws = tuple(int(x) for x in a.writers.split(","))
    print(json.dumps(run(a.seconds, ws), indent=1))


if __name__ == "__main__":
    main()
