"""Submission latency: a 2,000- and a 20,000-package ``--tree`` list POSTed to a real swarmd,
accepted and durable (the 202 comes after the fsync). Targets: 2,000 p50 < 150 ms, 20,000 < 1.5 s.

    python -m bench.submit [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from bench.common import Swarmd, summary, world_tree


def run(rounds: int = 10) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        sd = Swarmd(Path(tmp) / "state").start()
        try:
            with httpx.Client(timeout=120) as c:
                for n, k in ((2000, rounds), (20000, max(3, rounds // 3))):
                    lat = []
                    for r in range(k):
                        body = world_tree(n, prefix=f"s{n}r{r}x", seed=r)
                        t0 = time.perf_counter()
                        resp = c.post(sd.url + "/api/queue", content=body,
                                      headers={"Content-Type": "text/plain"})
                        lat.append((time.perf_counter() - t0) * 1000)
                        assert resp.status_code == 202, resp.text[:300]
                        assert resp.json()["queued"] == n
                    out[f"submit_{n}_ms"] = summary(lat)
            out["rss_mb_after"] = sd.rss_mb()
        finally:
            sd.stop()
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--rounds", type=int, default=10)
    print(json.dumps(run(p.parse_args().rounds), indent=1))


if __name__ == "__main__":
    main()
