"""The agent against a fake swarmd over real sockets, running the fake emerge."""

from __future__ import annotations

import hashlib
import os
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio

from droned.agent import Agent
from droned.config import DroneConfig
from droned.outbox import Outbox

from .fakes import IDENTITY, FakeSwarmd, drone_config


@asynccontextmanager
async def running(cfg: DroneConfig) -> AsyncIterator[Agent]:
    agent = Agent(cfg, identity=IDENTITY)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        yield agent
        agent.stop()


async def poll(pred: Callable[[], bool], timeout_s: float) -> None:
    """For conditions outside the event loop (processes, files)."""
    with trio.fail_after(timeout_s):
        # a process or a file: there is no event to wait on
        while not pred():  # noqa: ASYNC110
            await trio.sleep(0.05)


def _pids(pidfile: Path) -> list[int]:
    try:
        return [int(x) for x in pidfile.read_text().split()]
    except (OSError, ValueError):
        return []


async def wait_pids(pidfile: Path) -> list[int]:
    """The fake emerge's pid and its "make" child's, once it wrote them."""
    await poll(lambda: len(_pids(pidfile)) == 2, 10)
    return _pids(pidfile)


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is dead for our purpose.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


async def test_build_success_end_to_end(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "1.0")
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("dev-libs/libfoo-1.2.3-r1", estimate_s=2.0)
    async with running(cfg):
        reg = fake_swarmd.registrations[0]
        assert reg["name"] == "drone-test"
        assert {"hostname", "ip", "mac", "cores", "arch", "chost", "version"} <= set(reg)
        assert "target" not in reg  # the fake emerge builds for no particular target
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
    build_id, body = fake_swarmd.completes[0]
    lease = fake_swarmd.leases[build_id]["lease"]
    assert body["result"] == "success"
    assert body["lease"] == lease
    assert body["error"] is None
    assert body["duration_s"] >= 1.0
    relpath = body["artifact"]["path"]
    # The file's own name, then swarmd's build id: unique, and no package name until published.
    assert relpath == "dev-libs/libfoo/libfoo-1.2.3-r1-1.gpkg.tar.b-000001.upload"
    synced = tmp_path / "binhost" / relpath
    data = synced.read_bytes()
    assert body["artifact"]["size"] == len(data)
    assert body["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    # Heartbeats kept coming while the build ran, listing its lease.
    during = [hb for hb in fake_swarmd.heartbeats
              if hb["status"] == "building" and any(b["lease"] == lease for b in hb["builds"])]
    assert len(during) >= 3
    assert any(b.get("progress", 0) > 0 for hb in during for b in hb["builds"])
    assert all(isinstance(hb["load"], float) for hb in fake_swarmd.heartbeats)
    # The log reached swarmd, in order, before the report.
    text = bytes(fake_swarmd.logs[build_id]).decode()
    assert text.index(">>> Emerging (1 of 1) dev-libs/libfoo-1.2.3-r1::gentoo") < text.index(
        ">>> Completed (1 of 1)")
    kinds = [k for k, _ in fake_swarmd.events]
    assert kinds.index("complete") > max(i for i, k in enumerate(kinds) if k == "log")
    assert Outbox(Path(cfg.state_dir)).pending() == []


async def test_failed_build_reports_exit_code_and_tail(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_FAIL", "dev-libs/broken-1.0")
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("dev-libs/broken-1.0")
    async with running(cfg):
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
    _build_id, body = fake_swarmd.completes[0]
    assert body["result"] == "failed"
    assert body["artifact"] is None
    assert "exit code 1" in body["error"]
    assert "ERROR: dev-libs/broken-1.0::gentoo failed (compile phase)" in body["error"]
    assert not (tmp_path / "binhost").exists() or not any((tmp_path / "binhost").rglob("*.tar"))


async def test_no_binary_package_is_a_failure(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_NOPKG", "app-misc/nopkg-2")
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("app-misc/nopkg-2")
    async with running(cfg):
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
    _build_id, body = fake_swarmd.completes[0]
    assert body["result"] == "failed"
    assert "no binary package" in body["error"]


async def test_revocation_kills_the_process_group(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "60")
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("sys-devel/gcc-14.2.0")
    async with running(cfg):
        emerge_pid, make_pid = await wait_pids(fake_env)
        assert alive(emerge_pid)
        assert alive(make_pid)
        lease = fake_swarmd.leases["b-000001"]["lease"]
        fake_swarmd.revoked.add(lease)
        await poll(lambda: not alive(emerge_pid) and not alive(make_pid), 5)
        # The slot is free again: the drone takes the next job.
        monkeypatch.setenv("FAKE_EMERGE_SECONDS", "0.2")
        fake_swarmd.add_job("app-misc/next-1")
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
    assert [b for b, _ in fake_swarmd.completes] == ["b-000002"]
    assert fake_swarmd.complete_for("b-000001") == []
    assert not any(k == "complete_attempt" and v[0] == "b-000001" for k, v in fake_swarmd.events)


async def test_swarmd_away_during_completion(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "0.8")
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("dev-lang/rust-1.80.0")
    async with running(cfg) as agent:
        await wait_pids(fake_env)  # the build runs
        fake_swarmd.take_down()
        synced = tmp_path / "binhost" / "dev-lang/rust/rust-1.80.0-1.gpkg.tar.b-000001.upload"
        # the build goes on without swarmd, its report waits on disk
        await poll(lambda: bool(Outbox(Path(cfg.state_dir)).pending()), 10)
        assert synced.is_file()
        await trio.sleep(0.5)  # a few failed report attempts
        assert fake_swarmd.completes == []
        await fake_swarmd.bring_up()
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
        await trio.sleep(0.3)
        assert agent.builds == {}
    assert len(fake_swarmd.completes) == 1
    _b, body = fake_swarmd.completes[0]
    assert body["result"] == "success"
    assert body["artifact"]["sha256"] == hashlib.sha256(synced.read_bytes()).hexdigest()
    assert Outbox(Path(cfg.state_dir)).pending() == []


async def test_session_superseded_registers_again(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path
) -> None:
    cfg = drone_config(tmp_path, fake_swarmd.url)
    async with running(cfg):
        await fake_swarmd.wait_for(lambda: len(fake_swarmd.heartbeats) >= 1)
        fake_swarmd.supersede()
        await fake_swarmd.wait_for(lambda: len(fake_swarmd.registrations) == 2)
        new = fake_swarmd.session
        await fake_swarmd.wait_for(lambda: fake_swarmd.heartbeats[-1]["session"] == new)
        # and it still gets work with the new session
        fake_swarmd.add_job("app-misc/after-1")
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
    assert len(fake_swarmd.registrations) == 2
    assert fake_swarmd.completes[0][1]["result"] == "success"


async def test_stale_lease_on_complete_drops_report(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path
) -> None:
    fake_swarmd.stale_on_complete = True
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.add_job("app-misc/moved-1")
    async with running(cfg) as agent:
        await fake_swarmd.wait_for(
            lambda: any(k == "complete_attempt" for k, _ in fake_swarmd.events))
        await trio.sleep(0.5)
        assert agent.builds == {}
    attempts = [v for k, v in fake_swarmd.events if k == "complete_attempt"]
    assert len(attempts) == 1
    assert fake_swarmd.completes == []
    assert Outbox(Path(cfg.state_dir)).pending() == []


async def test_leftover_report_delivered_before_registering(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path
) -> None:
    cfg = drone_config(tmp_path, fake_swarmd.url)
    fake_swarmd.leases["b-000042"] = {"build_id": "b-000042", "lease": "L-old"}
    Outbox(Path(cfg.state_dir)).put("b-000042", {
        "lease": "L-old", "result": "success", "duration_s": 3.0, "error": None,
        "artifact": {"path": "a/b/b-1-42.gpkg.tar", "size": 1, "sha256": "0" * 64}})
    async with running(cfg):
        pass
    kinds = [k for k, _ in fake_swarmd.events]
    assert kinds[0] == "complete_attempt"
    assert kinds.index("complete") < kinds.index("register")
    assert fake_swarmd.complete_for("b-000042")[0]["lease"] == "L-old"


async def test_stop_returns_unfinished_build(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "60")
    cfg = drone_config(tmp_path, fake_swarmd.url, stop_grace_s=0.3)
    fake_swarmd.add_job("www-client/chromium-130.0")
    agent = Agent(cfg, identity=IDENTITY)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        pids = await wait_pids(fake_env)
        agent.stop()  # run() returns by itself: the nursery closes without a cancel
    assert not any(alive(p) for p in pids)
    assert [b["result"] for _, b in fake_swarmd.completes] == ["returned"]


async def test_restart_command_ends_run_for_reexec(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path
) -> None:
    cfg = drone_config(tmp_path, fake_swarmd.url)
    agent = Agent(cfg, identity=IDENTITY)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            fake_swarmd.commands.append({"command": "restart"})
    assert agent.restart_requested


async def test_repeated_restart_command_is_one_restart(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any,
    caplog: pytest.LogCaptureFixture
) -> None:
    """swarmd repeats a restart in every heartbeat reply until the agent registers again (a
    lost reply loses nothing). While a running build finishes, the repeats arrive: one
    restart, logged once, the build's report handed in."""
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "1.5")
    monkeypatch.delenv("FAKE_EMERGE_PIDFILE")
    cfg = drone_config(tmp_path, fake_swarmd.url, stop_grace_s=10.0)
    fake_swarmd.add_job("dev-libs/a-1")
    agent = Agent(cfg, identity=IDENTITY)
    with caplog.at_level("INFO", logger="droned.agent"), trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            await fake_swarmd.wait_for(lambda: any(hb["builds"] for hb in fake_swarmd.heartbeats))
            fake_swarmd.commands.append({"command": "restart"})
            before = len(fake_swarmd.heartbeats)
    assert agent.restart_requested
    assert len(fake_swarmd.heartbeats) - before >= 2  # the command came in several replies
    said = [r for r in caplog.records if "restart requested by swarmd" in r.getMessage()]
    assert len(said) == 1
    assert [b["result"] for _, b in fake_swarmd.completes] == ["success"]


async def test_two_slots_build_concurrently(
    fake_swarmd: FakeSwarmd, fake_env: Path, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setenv("FAKE_EMERGE_SECONDS", "1.0")
    monkeypatch.delenv("FAKE_EMERGE_PIDFILE")
    cfg = drone_config(tmp_path, fake_swarmd.url, slots=2)
    fake_swarmd.add_job("dev-libs/a-1")
    fake_swarmd.add_job("dev-libs/b-1")
    async with running(cfg):
        await fake_swarmd.wait_for(lambda: len(fake_swarmd.completes) == 2)
    assert any(len(hb["builds"]) == 2 for hb in fake_swarmd.heartbeats)
    paths = sorted(b["artifact"]["path"] for _, b in fake_swarmd.completes)
    assert paths[0].startswith("dev-libs/a/a-1-")
    assert paths[1].startswith("dev-libs/b/b-1-")
