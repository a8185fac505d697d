"""Swarm overhead per package on REAL builds: real swarmd, real drones running real emerge.

    python -m bench.real_builds [--packages 30] [--drones 2] [--keep DIR]

A private copy of demo/repo gets ``--packages`` more trivial EAPI-8 ebuilds
``swarm-bench/pN-1.0`` (same style as demo/repo: ``S="${WORKDIR}"``, a one-line src_compile
and src_install) that form a DAG: each package depends (RDEPEND, and DEPEND for every third)
on up to two earlier ones that nothing depends on yet (RDEPEND and DEPEND), and the last one
depends on every package left without a dependent: a tree with one root, the one world entry.
On purpose: swarmd learns dependencies from the nesting of ``emerge -pv --tree``, which shows
each package once, so a second dependent of a shared package (a diamond) is not seen; and with
several world entries emerge lists the roots first and their dependencies under ``[nomerge]``
rows, which swarmd treats as opaque. Either way packages are leased before their dependencies
are built and the drones' plan check refuses them ("would compile ... from source"); see
docs/BENCHMARKS.md. ``demo.portage_swarm.PortageSwarm`` starts swarmd (publishing into its
binhost with portage's own code), the binhost's web server and ``--drones`` swarm-drone agents
with the default emerge build command, each in its own portage sandbox. A client sandbox whose
world lists the root runs ``build-swarm submit --run --wait``, then installs the world
from the binhost (``emerge -uDN --getbinpkgonly``).

Per successful build, from swarmd (``GET /api/builds``) and from the building drone's sandbox:

- lease -> emerge start: ``started_ts`` (swarmd's assign time) to the start of the package's
  own build in the drone's emerge: the ``>>> emerge (i of n) cat/pkg-1.0`` line of
  ``<sandbox>/var/log/emerge.log`` (whole seconds, truncated), and at high resolution the
  creation (birth) time of the package's build log ``<sandbox>/var/log/portage/cat:pf:*.log``,
  which portage creates as it starts the package (``stat %W``, nanoseconds on ext4);
- emerge end -> in the index: the ``::: completed emerge`` line (whole seconds), at high
  resolution the ctime of the package's ``var/db/pkg/cat/pf`` directory (renamed into place at
  the end of the merge), to ``finished_ts`` (swarmd's time of the ``published`` event, when the
  package is in ``Packages``);
- the build itself: emerge start -> emerge end.

The lease -> emerge start time is split at the drone's ``leased`` log line (milliseconds):
before it, the lease reaching the drone; after it, the plan check (``emerge --pretend``),
emerge's own start and dependency calculation and, when the drone lacks them, the binary
installs of the package's dependencies from the binhost in the same emerge run (given apart).
The emerge end -> index time is split at the
drone's ``built and synced`` log line (milliseconds): the probe of the built file, the rsync
and the sha256 before it; the report and swarmd's publish (``inject``, and the wait for a new
second of the index TIMESTAMP) after it.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.common import REPO, summary

CATEGORY = "swarm-bench"
EBUILD = """\
EAPI=8
DESCRIPTION="benchmark package {n}"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
{deps}S="${{WORKDIR}}"
src_compile() {{ printf '#!/bin/sh\\necho "{pn}"\\n' > swarm-{pn} || die; }}
src_install() {{ dobin swarm-{pn}; }}
"""


def add_bench_packages(repo: Path, n: int, *, dag: bool = True, seed: int = 5,
                       category: str = CATEGORY) -> dict[str, list[str]]:
    """Write ``n`` trivial ebuilds ``category/pN-1.0`` into ``repo`` (and the category into
    ``profiles/categories``). With ``dag``, package i depends (RDEPEND and DEPEND) on up to
    two earlier packages that nothing depends on yet: a forest, see the module docstring.
    Returns {cpv: [cpvs it depends on]}."""
    rng = random.Random(seed)
    cats = repo / "profiles" / "categories"
    have = cats.read_text().split()
    if category not in have:
        cats.write_text("\n".join([*have, category]) + "\n")
    deps: dict[str, list[str]] = {}
    free: list[int] = []  # packages nothing depends on yet
    for i in range(n):
        pn = f"p{i}"
        mine: list[int] = []
        if dag and free and i == n - 1:
            mine = sorted(free)  # the single root: one world entry (see the docstring)
            free = []
        elif dag and free:
            k = rng.choice([0, 1, 1, 2])
            mine = sorted(rng.sample(free, min(len(free), k)))
            free = [j for j in free if j not in mine]
        free.append(i)
        dep_line = ""
        if mine:
            atoms = " ".join(f"{category}/p{j}" for j in mine)
            dep_line = f'RDEPEND="{atoms}"\nDEPEND="${{RDEPEND}}"\n'
        d = repo / category / pn
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{pn}-1.0.ebuild").write_text(EBUILD.format(n=i, pn=pn, deps=dep_line))
        deps[f"{category}/{pn}-1.0"] = [f"{category}/p{j}-1.0" for j in mine]
    return deps


def leaves(deps: dict[str, list[str]]) -> list[str]:
    used = {d for ds in deps.values() for d in ds}
    return sorted(c.rsplit("-", 1)[0] for c in deps if c not in used)


# ------------------------------------------------------------------------------ reading logs
EMERGE_RE = re.compile(r"^(\d+):  >>> emerge \((\d+) of (\d+)\) (\S+) to ")
DONE_RE = re.compile(r"^(\d+):  ::: completed emerge \((\d+) of (\d+)\) (\S+) to ")
CMD_RE = re.compile(r"^(\d+):  \*\*\* emerge ")
DRONE_RE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) INFO droned\.agent: "
                      r"(built and synced|leased) build_id=(\S+)")


def parse_emerge_log(path: Path) -> list[dict[str, Any]]:
    """Per package merge in emerge.log: {cpv, start, end, cmd} (whole seconds; cmd is the
    time of the ``*** emerge`` command line of the run it belongs to)."""
    out: list[dict[str, Any]] = []
    cmd = 0
    open_: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if m := CMD_RE.match(line):
            cmd = int(m.group(1))
        elif m := EMERGE_RE.match(line):
            rec: dict[str, Any] = {"cpv": m.group(4), "start": int(m.group(1)), "end": None, "cmd": cmd,
                   "of": int(m.group(3))}
            open_[m.group(4)] = rec
            out.append(rec)
        elif m := DONE_RE.match(line):
            rec2 = open_.pop(m.group(4), None)
            if rec2 is not None:
                rec2["end"] = int(m.group(1))
    return out


def birth_time(path: Path) -> float | None:
    """Creation time with nanoseconds (statx through GNU stat); None when unknown."""
    try:
        out = subprocess.run(["stat", "-c", "%.9W", str(path)], capture_output=True,
                             text=True, timeout=10, check=False).stdout.strip()
        v = float(out)
    except (OSError, ValueError, subprocess.SubprocessError):
        return None
    return v if v > 0 else None


def hires_start(sandbox: Path, cpv: str, after: float) -> float | None:
    """Birth time of the first build log of ``cpv`` created after ``after``."""
    cat, pf = cpv.split("/", 1)
    best = None
    for p in (sandbox / "var" / "log" / "portage").glob(f"{cat}:{pf}:*.log"):
        b = birth_time(p)
        if b is not None and b >= after - 0.001 and (best is None or b < best):
            best = b
    return best


def hires_end(sandbox: Path, cpv: str) -> float | None:
    try:
        return os.stat(sandbox / "var" / "db" / "pkg" / cpv).st_ctime_ns / 1e9
    except OSError:
        return None


def parse_drone_log(log: Path) -> dict[tuple[str, str], float]:
    """{(build id, "leased" | "built and synced"): wall time of the drone's log line}
    (milliseconds; the drone logs local time)."""
    out: dict[tuple[str, str], float] = {}
    try:
        lines = log.read_text(errors="replace").splitlines()
    except OSError:
        return out
    for line in lines:
        if m := DRONE_RE.match(line):
            t = time.mktime(time.strptime(m.group(1), "%Y-%m-%d %H:%M:%S"))
            out[(m.group(4), m.group(3))] = t + int(m.group(2)) / 1000
    return out


def _s(values: list[float]) -> dict[str, float]:
    return {k: round(v, 3) if isinstance(v, float) else v for k, v in summary(values).items()}


# ------------------------------------------------------------------------------------ the run
def run(packages: int = 30, drones: int = 2, keep: Path | None = None,
        timeout_s: float = 420) -> dict[str, Any]:
    from demo.portage_swarm import PortageSwarm, copy_repo

    for tool in ("rsync", "wget", "stat"):
        if not shutil.which(tool):
            raise RuntimeError(f"{tool} is not installed (the drones and portage need it)")
    (REPO / ".bench").mkdir(exist_ok=True)
    root = Path(tempfile.mkdtemp(prefix="real-builds-", dir=REPO / ".bench"))
    out: dict[str, Any] = {"packages_generated": packages, "drones": drones}
    sw: PortageSwarm | None = None
    try:
        repo = copy_repo(root / "repo")
        deps = add_bench_packages(repo, packages)
        world = leaves(deps)
        out["world"] = len(world)
        out["dep_edges"] = sum(len(v) for v in deps.values())
        sw = PortageSwarm(root / "swarm", repo=repo).start()
        names = [f"drone-{i}" for i in range(drones)]
        for name in names:
            sw.add_drone(name)
        sw.wait_drones(names)
        client = sw.sandbox("client", world=world)

        t0 = time.time()
        r = sw.cli(client, "submit", "--run", "--wait", "--interval", "0.5", timeout=timeout_s)
        t_submit = time.time() - t0
        out["submit_exit"] = r.returncode  # 1 when a package failed for good (see notes)
        t1 = time.time()
        inst = sw.install(client, timeout=timeout_s)
        t_install = time.time() - t1
        merged = [ln for ln in (inst.stdout + inst.stderr).splitlines()
                  if ln.startswith(">>> Emerging")]
        binary = sum(1 for ln in merged if ln.startswith(">>> Emerging binary"))
        want = set(deps)
        missing = sorted(want - set(client.installed()))
        if binary != len(merged):
            raise RuntimeError(f"the client merged {len(merged) - binary} packages from source")
        out["client_missing"] = missing

        builds = sw.builds()
        ok = [b for b in builds if b["result"] == "success"]
        queue = sw.get("/api/queue")["entries"]
        dlog: dict[tuple[str, str], float] = {}
        for name in names:
            dlog.update(parse_drone_log(sw.work / f"drone-{name}.log"))
        logs = {name: parse_emerge_log(sw.sandboxes[name].root / "var/log/emerge.log")
                for name in names}

        per: list[dict[str, Any]] = []
        for b in ok:
            sb = sw.sandboxes[b["drone_name"]].root
            lease = float(b["started_ts"])
            rec = next((x for x in logs[b["drone_name"]]
                        if x["cpv"] == b["cpv"] and x["start"] >= int(lease)
                        and x["end"] is not None), None)
            if rec is None:
                continue
            hs = hires_start(sb, b["cpv"], lease)
            he = hires_end(sb, b["cpv"])
            item = {"cpv": b["cpv"], "drone": b["drone_name"], "lease": lease,
                    "index": float(b["finished_ts"]), "start_s": rec["start"],
                    "end_s": rec["end"], "cmd_s": rec["cmd"], "merges_in_run": rec["of"],
                    "start_hr": hs, "end_hr": he, "leased": dlog.get((b["id"], "leased")),
                    "synced": dlog.get((b["id"], "built and synced"))}
            per.append(item)

        def hr_ok(x: dict[str, Any]) -> bool:
            # The high-resolution times agree with emerge.log's whole seconds (truncated).
            return (x["start_hr"] is not None and x["end_hr"] is not None
                    and x["start_s"] <= x["start_hr"] < x["start_s"] + 1.001
                    and x["end_s"] - 1.0 <= x["end_hr"] < x["end_s"] + 1.001)

        good = [x for x in per if hr_ok(x)]
        a_hr = [x["start_hr"] - x["lease"] for x in good]
        b_hr = [x["index"] - x["end_hr"] for x in good]
        c_hr = [x["end_hr"] - x["start_hr"] for x in good]
        a_s = [x["start_s"] - x["lease"] for x in per]
        b_s = [x["index"] - x["end_s"] for x in per]
        c_s = [float(x["end_s"] - x["start_s"]) for x in per]
        assign_leased = [x["leased"] - x["lease"] for x in per if x["leased"]]
        leased_start = [x["start_hr"] - x["leased"] for x in good if x["leased"]]
        alone = [x["start_hr"] - x["lease"] for x in good if x["merges_in_run"] == 1]
        with_deps = [x["start_hr"] - x["lease"] for x in good if x["merges_in_run"] > 1]
        end_sync = [x["synced"] - x["end_hr"] for x in good if x["synced"]]
        sync_index = [x["index"] - x["synced"] for x in per if x["synced"]]
        first = min(float(b["started_ts"]) for b in builds)
        last = max(float(b["finished_ts"] or 0) for b in builds)
        out.update({
            "queued": len(queue), "built": sum(1 for e in queue if e["state"] == "built"),
            "builds": len(builds), "successes": len(ok),
            "not_success": [{"cpv": b["cpv"], "result": b["result"],
                             "error": (b["error"] or "")[:160]} for b in builds
                            if b["result"] != "success"],
            "measured": len(per), "high_resolution": len(good),
            "lease_to_start_s": _s(a_hr), "end_to_index_s": _s(b_hr), "build_s": _s(c_hr),
            "lease_to_start_whole_s": _s(a_s), "end_to_index_whole_s": _s(b_s),
            "build_whole_s": _s(c_s),
            "assign_to_drone_leased_s": _s(assign_leased),
            "drone_leased_to_start_s": _s(leased_start),
            "lease_to_start_no_binary_deps_s": _s(alone),
            "lease_to_start_with_binary_deps_s": _s(with_deps),
            "end_to_synced_s": _s(end_sync), "synced_to_index_s": _s(sync_index),
            "overhead_fraction_p50": round((statistics.median(a_hr) + statistics.median(b_hr))
                                           / statistics.median(c_hr), 2) if good else None,
            "overhead_total_s": _s([a + b for a, b in zip(a_hr, b_hr, strict=True)]),
            "overhead_over_build": _s([(a + b) / c for a, b, c in
                                       zip(a_hr, b_hr, c_hr, strict=True) if c > 0]),
            "makespan_submit_wait_s": round(t_submit, 1),
            "makespan_first_lease_to_last_index_s": round(last - first, 1),
            "sum_build_s": round(sum(c_hr), 1),
            "client_install_s": round(t_install, 1), "client_installed_binaries": binary,
            "per_package": [{k: (round(v, 3) if isinstance(v, float) else v)
                             for k, v in x.items()} for x in per],
        })
    finally:
        if sw is not None:
            sw.stop()
        if keep is not None:  # also after a failure: the logs say why
            shutil.copytree(root, keep, dirs_exist_ok=True, symlinks=True)
        shutil.rmtree(root, ignore_errors=True)
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--packages", type=int, default=30)
    p.add_argument("--drones", type=int, default=2)
    p.add_argument("--keep", type=Path, help="copy the swarm's work dir here")
    a = p.parse_args()
    res = run(a.packages, a.drones, a.keep)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
