"""Real portage, end to end (SPEC section 12): the swarm's binhost is one Gentoo installs from.

Real swarmd (publishing with portage's binarytree), a static web server for the binhost, real
swarm-drone agents running the default `emerge` build command in portage sandboxes, the
client's real `build-swarm submit --run --wait`, and the client's real
`emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world`. Everything is asserted on what
portage recorded and installed, never on exit codes alone (emerge exits 0 on many failures).

Bundled repository (demo/repo): libgreet (IUSE +unicode), buildtool (a build-time-only
dependency of hello), hello (RDEPEND libgreet[unicode], a USE dependency; IUSE shout),
fortune -> hello, banner, motd -> banner fortune. The client's world is swarm-demo/motd.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from demo.portage_swarm import BIN, PortageSwarm, copy_repo, wait_until
from demo.sandbox import Sandbox

pytestmark = pytest.mark.slow

RUNTIME = {"swarm-demo/libgreet-1.0", "swarm-demo/hello-1.0", "swarm-demo/fortune-1.0",
           "swarm-demo/banner-1.0", "swarm-demo/motd-1.0"}
ALL = RUNTIME | {"swarm-demo/buildtool-1.0"}


def _check_binhost(sw: PortageSwarm) -> list[dict[str, str]]:
    """emaint is clean, every index entry's file is there, no upload is left behind, and the
    index lists exactly what swarmd's journal says it published."""
    em = sw.emaint_check()
    assert em.returncode == 0, em.stdout + em.stderr
    assert "not in" not in em.stdout + em.stderr, em.stdout + em.stderr
    index = sw.index()
    for d in index:
        assert (sw.binhost / d["PATH"]).is_file(), d
    assert not list(sw.binhost.rglob("*.upload")), "an upload was left unpublished"
    published = {b["artifact"]["path"] for b in sw.builds()
                 if b["result"] == "success" and b["artifact"]}
    assert {d["PATH"] for d in index} == published
    return index


def _binary_install(sw: PortageSwarm, client: Sandbox, expect: set[str]) -> str:
    r = sw.install(client)
    out = r.stdout + r.stderr
    merged = [ln for ln in out.splitlines() if ln.startswith(">>> Emerging")]
    assert merged, out[-3000:]
    assert all(ln.startswith(">>> Emerging binary") for ln in merged), merged
    got = {ln.split(")", 1)[1].strip().split("::")[0] for ln in merged}
    assert got == expect, (got, out[-2000:])
    return out


def test_real_portage_end_to_end(tmp_path: Path) -> None:
    # The drones' default sync_command is rsync; portage fetches binaries with wget.
    for tool in ("rsync", "wget"):
        assert shutil.which(tool), f"{tool} is not installed (.ci/run installs it with apt)"
    repo = copy_repo(tmp_path / "repo")
    sw = PortageSwarm(tmp_path / "swarm", repo=repo).start()
    try:
        # libgreet is taught to be the long pole, so the first lease goes to it: the drone
        # whose USE differs takes it first, fails use_mismatch, and a good drone rebuilds it.
        r = httpx.post(sw.url + "/api/history",
                       json={"packages": {"swarm-demo/libgreet": 3000}}, timeout=10)
        assert r.status_code == 200, r.text
        sw.add_drone("drone-odd", package_use=["swarm-demo/libgreet -unicode",
                                               "swarm-demo/hello shout"])
        sw.add_drone("drone-other", make_conf='CFLAGS="-O3 -pipe -march=native"\n')
        sw.wait_drones(["drone-odd", "drone-other"])
        drones = {d["name"]: d for d in sw.get("/api/drones")["drones"]}
        assert drones["drone-odd"]["target_id"] != drones["drone-other"]["target_id"]

        client = sw.sandbox("client", world=["swarm-demo/motd"])
        submit = subprocess.Popen(
            [str(BIN / "build-swarm"), "--orchestrator", sw.url, "submit", "--run", "--wait",
             "--interval", "0.5"],
            env={**sw.env, **client.env()}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True)
        wait_until(lambda: any(b["drone_name"] == "drone-odd" for b in sw.builds()), 60,
                   "the USE-odd drone leasing its first package")
        sw.add_drone("drone-a")
        sw.add_drone("drone-b")
        out, _ = submit.communicate(timeout=240)
        assert submit.returncode == 0, out

        queue = sw.get("/api/queue")["entries"]
        assert {e["cpv"] for e in queue} == ALL, out
        assert all(e["state"] == "built" for e in queue), queue
        tid = drones["drone-odd"]["target_id"]
        assert all(e["target_id"] == tid for e in queue)
        lib = next(e for e in queue if e["cpv"] == "swarm-demo/libgreet-1.0")
        assert lib["use"] == ["unicode"]

        builds = sw.builds()
        assert not [b for b in builds if b["drone_name"] == "drone-other"], \
            "a drone of another target got work"
        odd = [b for b in builds if b["drone_name"] == "drone-odd"]
        assert any(b["cpv"] == "swarm-demo/libgreet-1.0" for b in odd)
        for b in odd:
            if b["cpv"] in ("swarm-demo/libgreet-1.0", "swarm-demo/hello-1.0"):
                # never published: a USE mismatch, or handed back before building (its plan
                # wanted libgreet, not built yet: the edge emerge --tree did not print)
                assert b["result"] in ("failed", "returned"), b
                assert b["error"].startswith(
                    "use_mismatch:" if b["result"] == "failed" else "plan:"), b

        index = _check_binhost(sw)
        by_cpv = {d["CPV"]: d for d in index}
        assert set(by_cpv) == ALL
        assert "unicode" in by_cpv["swarm-demo/libgreet-1.0"].get("USE", "").split()
        assert "shout" not in by_cpv["swarm-demo/hello-1.0"].get("USE", "").split()

        # The client installs the whole world as binaries from the swarm's binhost.
        _binary_install(sw, client, RUNTIME)
        assert set(client.installed()) >= RUNTIME
        for cpv in RUNTIME:
            assert client.installed_meta(cpv, "BUILD_TIME") == by_cpv[cpv]["BUILD_TIME"], cpv
        run_env = {**sw.env, "PATH": f"{client.root}/usr/bin:/usr/bin:/bin"}
        motd = subprocess.run(["swarm-motd"], capture_output=True, text=True, timeout=30,
                              env=run_env)
        assert "=== build-swarm ===" in motd.stdout
        assert "hello from libgreet unicode" in motd.stdout
        assert "hello-1.0" in motd.stdout

        # Round 2: a version bump, with swarmd killed -9 while it is being built or published.
        ebuild = (repo / "swarm-demo/hello/hello-1.0.ebuild").read_text()
        (repo / "swarm-demo/hello/hello-1.1.ebuild").write_text(ebuild)
        r2 = sw.cli(client, "--json", "submit", "--run")
        assert r2.returncode == 0, r2.stdout + r2.stderr
        assert json.loads(r2.stdout)["queued"] == 1, r2.stdout

        def hello11() -> str | None:
            for b in sw.builds():
                if b["cpv"] == "swarm-demo/hello-1.1" and b["state"] in (
                        "building", "publishing"):
                    return str(b["state"])
            return None
        first = wait_until(hello11, 90, "hello-1.1 being built", interval=0.05)
        if first == "building":
            try:
                wait_until(lambda: hello11() == "publishing", 30, "publishing", interval=0.03)
            except TimeoutError:
                pass
        sw.kill_swarmd()
        sw.start_swarmd()
        wait_until(lambda: any(e["cpv"] == "swarm-demo/hello-1.1" and e["state"] == "built"
                               for e in sw.get("/api/queue")["entries"]), 120,
                   "hello-1.1 built after the swarmd restart")
        index = _check_binhost(sw)
        assert sum(1 for d in index if d["CPV"] == "swarm-demo/hello-1.1") == 1
        time.sleep(1.0)  # the index's TIMESTAMP is whole seconds
        _binary_install(sw, client, {"swarm-demo/hello-1.1"})
        assert "swarm-demo/hello-1.1" in client.installed()
        hello = subprocess.run(["swarm-hello"], capture_output=True, text=True, timeout=30,
                               env=run_env)
        assert "hello-1.1" in hello.stdout

        # The index is lost (or replaced by hand) while swarmd is down: at start-up swarmd
        # makes it agree with the journal again.
        sw.kill_swarmd()
        for name in ("Packages", "Packages.gz"):
            (sw.binhost / name).unlink()
        sw.start_swarmd()
        index = _check_binhost(sw)
        assert {d["CPV"] for d in index} == ALL | {"swarm-demo/hello-1.1"}
        log = (sw.work / "swarmd.log").read_text()
        assert "checked against the journal" in log
    finally:
        sw.stop()
