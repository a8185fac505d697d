"""`make demo`: a swarm building real Gentoo binary packages on this machine, and a client
installing them.

Real portage, no change to this machine: swarmd (publishing into .demo/binhost with portage's
own code), a static web server for the binhost, gatewayd, and swarm-drone agents running real
`emerge` against the bundled ebuild repository demo/repo, each in its own portage prefix under
.demo/sandboxes/ (demo/sandbox.py). A client sandbox whose world is `swarm-demo/motd` runs
`build-swarm submit --run`; the demo shows the build live, prints the client's binrepos.conf
stanza (`build-swarm --gateway URL binhost`), installs the world from the binhost as binaries
(`emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world`), runs the installed program and
prints a summary. It stops every process it started, also on failure and on Ctrl-C.

Environment:
- DEMO=fake: the scheduler demo instead (demo/fake.py: 135 packages, fake emerge, 3 drones);
- DEMO_HOLD=1: after the summary keep the swarm running (the status page's URL printed) until
  Ctrl-C.
Logs stay in .demo/ until the next run. Exit 0 on success, 1 with one line saying what failed.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

from swarmlib.counts import count_states

PROJECT = Path(__file__).resolve().parent.parent
WORK = PROJECT / ".demo"
BIN = Path(sys.executable).parent
# (name, cores, make.conf addition): the third drone has another target (other CFLAGS).
DRONES = [("drone-vega", 4, ""), ("drone-deneb", 8, ""),
          ("drone-altair", 4, 'CFLAGS="-O3 -pipe"\n')]
WORLD = "swarm-demo/motd"
BUILD_TIMEOUT_S = 150.0
FINAL = ("built", "failed", "blocked", "cancelled")


class DemoFailed(Exception):
    """One line saying what went wrong."""


def say(msg: str = "") -> None:
    print(msg, flush=True)


def bar(frac: float, width: int = 24) -> str:
    n = int(round(frac * width))
    return "#" * n + "." * (width - n)


def indent(text: str, pre: str = "    ") -> str:
    return "\n".join(pre + ln for ln in text.rstrip("\n").splitlines())


class Live:
    """The build as an operator watches it: a block redrawn in place on a terminal (progress
    bar, each drone's current package, waiting entries), and one line per event above it."""

    def __init__(self, sw: Any, others: set[str]) -> None:
        self.sw = sw
        self.others = others  # drones of another target
        self.tty = sys.stdout.isatty()
        self.block = 0
        self.last_plain = ""
        self.seen_builds: set[str] = set()
        self.seen_entries: set[str] = set()
        self.first_seen: dict[str, float] = {}
        self.t0 = time.monotonic()

    def _event(self, lines: list[str]) -> None:
        if not lines:
            return
        if self.tty and self.block:
            sys.stdout.write(f"\x1b[{self.block}F\x1b[J")
            self.block = 0
        sys.stdout.write("\n".join(lines) + "\n")

    def poll(self) -> list[dict[str, Any]]:
        builds = {b["id"]: b for b in self.sw.builds()}  # first: the queue is then as new
        queue = self.sw.get("/api/queue")["entries"]
        drones = self.sw.get("/api/drones")["drones"]
        now = time.monotonic()
        events: list[str] = []
        # Failed attempts (USE mismatch, a plan that would compile more, ...): once each.
        for b in sorted(builds.values(), key=lambda b: b["id"]):
            if b["id"] in self.seen_builds or b.get("result") in (None, "success"):
                continue
            self.seen_builds.add(b["id"])
            err = b.get("error") or "-"
            events.append(f"  {b['result']:<6} {b['cpv']} on {b['drone_name']} "
                          f"(attempt {b.get('attempt')}): {err}")
            if b["result"] == "returned" and err.startswith("plan: would compile "):
                needed = err[len("plan: would compile "):].split(" from source")[0].split(", ")
                entry = next((e for e in queue if e["id"] == b.get("entry_id")), None)
                learned = [c for c in needed if entry and c in (entry.get("deps") or [])]
                if learned:
                    events.append(f"         swarmd learned the dependency emerge --tree did "
                                  f"not show: {b['cpv']} waits for {', '.join(learned)}")
        for e in queue:
            if e["state"] not in FINAL or e["id"] in self.seen_entries:
                continue
            self.seen_entries.add(e["id"])
            b = builds.get(e.get("build_id") or "")
            if e["state"] == "built" and b is not None:
                art = (b.get("artifact") or {}).get("path", "?")
                events.append(f"  built  {e['cpv']} on {b['drone_name']} in "
                              f"{b.get('duration_s') or 0:.1f} s -> published {art}")
            else:
                events.append(f"  {e['state']:<6} {e['cpv']}: {e.get('reason') or '-'}")
        self._event(events)
        done = sum(1 for e in queue if e["state"] in FINAL)
        counts = count_states(queue)
        total = len(queue)
        head = (f"  {now - self.t0:5.1f}s [{bar(done / max(total, 1), 16)}] {done}/{total} "
                f"built {counts.get('built', 0)} building "
                f"{counts.get('assigned', 0) + counts.get('building', 0)} "
                f"ready {counts.get('ready', 0)} waiting {counts.get('pending', 0)} "
                f"failed {counts.get('failed', 0) + counts.get('blocked', 0)}")
        block = [head]
        for d in sorted(drones, key=lambda d: d["name"]):
            cur = []
            for c in d.get("current_builds") or []:
                since = self.first_seen.setdefault(c["build_id"], now)
                cur.append(f"{c['cpv']} ({now - since:.0f} s)")
            what = ", ".join(cur) or ("no work for its target" if d["name"] in self.others
                                      else "idle")
            block.append(f"    {d['name']:<13}{d['cores']:>2} cores {(d.get('target_id') or '-')[:8]}"
                         f" {d['status']:<9}{what}")
        for b in builds.values():
            if b.get("state") == "publishing":
                block.append(f"    publishing {b['cpv']} from {b['drone_name']} into the index")
        for e in queue:
            if e.get("waiting"):
                block.append(f"    waiting {e['cpv']}: {e['waiting']}")
        if self.tty:
            if self.block:
                sys.stdout.write(f"\x1b[{self.block}F\x1b[J")
            width = max(40, shutil.get_terminal_size().columns - 1)  # no wrap: redraw in place
            sys.stdout.write("\n".join(ln[:width] for ln in block) + "\n")
            self.block = len(block)
        else:
            # Not a terminal (a log): print the block only when more than the clock changed.
            plain = re.sub(r"^ +[0-9.]+s | \([0-9]+ s\)", "", "\n".join(block))
            if plain != self.last_plain:
                sys.stdout.write("\n".join(block) + "\n")
                self.last_plain = plain
        sys.stdout.flush()
        return list(queue)


def gateway_up(proc: subprocess.Popen[bytes], url: str, timeout: float = 30) -> bool:
    """True once gatewayd answers /health; False at once if it exits, or after timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/health", timeout=2).status_code < 500:
                return True
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    return False


def run_real() -> int:
    from demo.portage_swarm import PortageSwarm, free_port

    for tool in ("rsync", "wget"):
        if not shutil.which(tool):
            say(f"demo: FAILED: {tool} is not installed (the drones sync with rsync, portage "
                "fetches binaries with wget)")
            return 1
    t_start = time.monotonic()
    if WORK.exists():
        shutil.rmtree(WORK)
    sw = PortageSwarm(WORK)
    gw: subprocess.Popen[bytes] | None = None
    rc = 1
    try:
        say("demo: real portage, real emerge, bundled ebuild repository demo/repo; every portage")
        say("      prefix is under .demo/ (nothing on this machine is changed)")
        sw.start()
        say(f"demo: swarmd on {sw.url}, publishing into .demo/binhost with portage's code")
        say(f"demo: binhost served at {sw.binhost_url}/ (python -m http.server)")
        gw_port, gw_admin = free_port(), free_port()
        gw_url = f"http://127.0.0.1:{gw_port}"
        gw = subprocess.Popen(
            [str(BIN / "gatewayd"), "--listen", f"127.0.0.1:{gw_port}",
             "--admin-listen", f"127.0.0.1:{gw_admin}", "--orchestrator", sw.url,
             "--config", str(PROJECT / "tests" / "data" / "empty.toml"),
             "--spool-dir", str(WORK / "gateway-spool"),
             "--public-binhost-url", sw.binhost_url + "/"],
            stdout=(WORK / "gatewayd.log").open("wb"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, cwd=PROJECT, env=sw.env)
        gw_ok = gateway_up(gw, gw_url)
        if gw_ok:
            say(f"demo: gatewayd on {gw_url} (public API; binhost URL {sw.binhost_url}/)")
            say(f"demo: the status page (Command Center): {gw_url}/  (DEMO_HOLD=1 keeps it "
                "up after the summary)")
        else:
            say(f"demo: gatewayd did not start (exit {gw.poll()}, see .demo/gatewayd.log); "
                "going on without it")

        for name, cores, make_conf in DRONES:
            sw.add_drone(name, cores=cores, make_conf=make_conf)
        sw.wait_drones([d[0] for d in DRONES])
        drones = {d["name"]: d for d in sw.get("/api/drones")["drones"]}
        say("demo: drones, each a portage sandbox in .demo/sandboxes/<name> running "
            "`emerge =<pkg>` per job:")
        for name, cores, _ in DRONES:
            d = drones[name]
            t = d.get("target") or {}
            say(f"    {name:<13} {cores:>2} cores  target {d['target_id']}  "
                f"CFLAGS=\"{t.get('cflags', '?')}\"  {t.get('chost', '')}")

        client = sw.sandbox("client", world=[WORLD])
        say(f"demo: client sandbox .demo/sandboxes/client, world: {WORLD}")
        say()
        say("$ build-swarm submit --run        # on the client: emerge -puDNv @world, sent with "
            "its target")
        t_sub = time.monotonic()
        r = sw.cli(client, "submit", "--run", timeout=120)
        out = (r.stdout + r.stderr).strip()
        say(indent(out))
        if r.returncode != 0:
            raise DemoFailed(f"build-swarm submit --run exited with {r.returncode}")
        others = {n for n, d in drones.items()
                  if d["target_id"] != drones[DRONES[0][0]]["target_id"]}
        say()
        say("demo: the swarm builds: each package once, on a drone of the client's target,")
        say("      its dependencies coming from the binhost as binaries")
        live = Live(sw, others)
        while True:
            queue = live.poll()
            if queue and all(e["state"] in FINAL for e in queue):
                break
            if time.monotonic() - t_sub > BUILD_TIMEOUT_S:
                raise DemoFailed(f"the build did not finish within {BUILD_TIMEOUT_S:.0f} s "
                                 "(see .demo/*.log)")
            time.sleep(0.5)
        t_build = time.monotonic() - t_sub
        ctid = queue[0].get("target_id") or ""
        builds = sw.builds()
        ok = [b for b in builds if b["result"] == "success"]
        bad_entries = [e for e in queue if e["state"] != "built"]
        say()
        say("$ build-swarm status")
        st = sw.cli(client, "status")
        say(indent((st.stdout or st.stderr).strip()))

        say()
        where = (["--gateway", gw_url, "binhost"] if gw_ok else
                 ["--orchestrator", sw.url, "binhost", "--url", sw.binhost_url + "/"])
        say(f"$ build-swarm {' '.join(where)}   # the client's binrepos.conf")
        bh = subprocess.run([str(BIN / "build-swarm"), *where],
                            env={**sw.env, **client.env()}, capture_output=True, text=True,
                            timeout=60, check=False)
        say(indent((bh.stdout or bh.stderr).strip()))
        if bh.returncode != 0:
            raise DemoFailed(f"build-swarm binhost exited with {bh.returncode}")
        # demo/sandbox.py already wrote this stanza into the client's binrepos.conf.
        if bad_entries:
            raise DemoFailed(f"{len(bad_entries)} package(s) not built: " + ", ".join(
                f"{e['cpv']} {e['state']}" for e in bad_entries))

        say()
        say("$ emerge -uDN --getbinpkgonly --binpkg-respect-use=y @world   # on the client")
        t_inst = time.monotonic()
        inst = sw.install(client)
        t_install = time.monotonic() - t_inst
        text = inst.stdout + inst.stderr
        merged = [ln for ln in text.splitlines() if ln.startswith(">>> Emerging")]
        for ln in merged:
            say("    " + ln)
        binary = [ln for ln in merged if ln.startswith(">>> Emerging binary")]
        installed = set(client.installed())
        got = {ln.split(")", 1)[1].strip().split("::")[0] for ln in merged}
        if inst.returncode != 0 or not merged:
            say(indent("\n".join(text.splitlines()[-20:])))
            raise DemoFailed(f"the client's emerge exited with {inst.returncode} "
                             f"after {len(merged)} package(s)")
        em = sw.emaint_check()
        emaint_ok = em.returncode == 0 and "not in" not in em.stdout + em.stderr
        run_env = {**sw.env, "PATH": f"{client.root}/usr/bin:/usr/bin:/bin"}
        motd = subprocess.run(["swarm-motd"], capture_output=True, text=True, timeout=30,
                              env=run_env, check=False)

        per: dict[str, int] = {}
        for b in ok:
            per[b["drone_name"]] = per.get(b["drone_name"], 0) + 1
        failed_attempts = [b for b in builds if b["result"] not in (None, "success")]
        index = sw.index()
        say()
        say("demo summary")
        say(f"  world        {WORLD} for target {ctid}: {len(queue)} packages to build")
        say(f"  swarm build  {len(ok)} built, {len(bad_entries)} failed, in {t_build:.1f} s "
            "(submit to last publish)")
        say("  per drone    " + ", ".join(f"{k}: {v}" for k, v in sorted(per.items()))
            + "".join(f"; {n}: none (another target)" for n in sorted(others)))
        if failed_attempts:
            say(f"  retried      {len(failed_attempts)} attempt(s) "
                f"{'/'.join(sorted({str(b['result']) for b in failed_attempts}))} "
                "(shown above), then built")
        say(f"  binhost      {len(index)} packages in .demo/binhost/Packages; emaint binhost "
            f"--check: {'ok' if emaint_ok else 'FAILED'}")
        say(f"  client       {len(binary)} of {len(merged)} installed as [binary] in "
            f"{t_install:.1f} s, nothing compiled"
            + (f" ({len(queue) - len(merged)} build-time-only package(s) not needed)"
               if len(queue) > len(merged) else ""))
        say("  $ swarm-motd (installed in .demo/sandboxes/client/usr/bin)")
        say(indent(motd.stdout.strip() or motd.stderr.strip(), "    | "))

        problems = []
        if len(binary) != len(merged):
            problems.append(f"only {len(binary)} of {len(merged)} installed as [binary]")
        if not got <= {b["cpv"] for b in ok}:
            problems.append("the client installed packages the swarm did not build: "
                            + ", ".join(sorted(got - {b['cpv'] for b in ok})))
        if not got <= installed:
            problems.append("not in the client's package database: "
                            + ", ".join(sorted(got - installed)))
        if not emaint_ok:
            problems.append("emaint binhost --check: " + (em.stdout + em.stderr).strip())
        if motd.returncode != 0:
            problems.append(f"swarm-motd exited with {motd.returncode}")
        if any(b["drone_name"] in others for b in builds):
            problems.append("a drone of another target got work")
        if not gw_ok:
            problems.append("gatewayd did not start (see .demo/gatewayd.log)")
        if problems:
            raise DemoFailed("; ".join(problems))
        rc = 0
        if os.environ.get("DEMO_HOLD") == "1":
            say()
            say(f"demo: holding: status page {gw_url + '/' if gw_ok else '(not running)'}, swarmd "
                f"{sw.url}, binhost {sw.binhost_url}/; Ctrl-C stops everything")
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                say()
    except DemoFailed as exc:
        say(f"demo: FAILED: {exc}")
        rc = 1
    except KeyboardInterrupt:
        say("\ndemo: interrupted")
        rc = 130
    except (TimeoutError, httpx.HTTPError, OSError, subprocess.SubprocessError) as exc:
        say(f"demo: FAILED: {exc} (see .demo/*.log)")
        rc = 1
    finally:
        n = len(sw.drones) + sum(1 for p in (sw.swarmd, sw.http, gw) if p is not None)
        if gw is not None and gw.poll() is None:
            gw.send_signal(signal.SIGTERM)
            try:
                gw.wait(20)
            except subprocess.TimeoutExpired:
                gw.kill()
                gw.wait()
        sw.stop()
        say(f"demo: stopped {n} processes; total {time.monotonic() - t_start:.1f} s")
        say("demo: logs, sandboxes and the binhost are in .demo/ (removed at the next run)")
    return rc


def main() -> int:
    which = os.environ.get("DEMO", "real").strip().lower() or "real"
    if which == "fake":
        from demo.fake import main as fake_main
        return fake_main()
    if which != "real":
        say(f"demo: DEMO={which!r}: expected 'real' (the default) or 'fake'")
        return 2
    return run_real()


if __name__ == "__main__":
    sys.exit(main())
