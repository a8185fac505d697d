"""``swarm-drone`` as a user runs it: a real process, a TOML config, signals, re-exec."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from .fakes import COPY, TOKEN, FakeSwarmd

pytestmark = pytest.mark.slow

SWARM_DRONE = Path(sys.executable).parent / "swarm-drone"


def write_config(tmp_path: Path, url: str) -> Path:
    build = [sys.executable, "-m", "droned.fake_emerge", "--pkgdir", "{pkgdir}", "={cpv}"]
    sync = [sys.executable, "-c", COPY, "{artifact}", "{binhost_target}/{relpath}"]
    cfg = tmp_path / "swarm-drone.toml"
    cfg.write_text(
        f"orchestrator = {json.dumps(url)}\n"
        f'name = "drone-proc"\n'
        f"pkgdir = {json.dumps(str(tmp_path / 'pkgdir'))}\n"
        f"binhost_target = {json.dumps(str(tmp_path / 'binhost'))}\n"
        f"state_dir = {json.dumps(str(tmp_path / 'state'))}\n"
        f"build_command = {json.dumps(build)}\n"
        f"sync_command = {json.dumps(sync)}\n"
        "lease_wait_s = 1\nbackoff_base_s = 0.05\nbackoff_max_s = 0.3\nlog_interval_s = 0.1\n"
        "stop_grace_s = 1\nlog_format = \"json\"\n"
    )
    return cfg


async def test_real_process_builds_restarts_and_stops_on_sigterm(
    fake_swarmd: FakeSwarmd, tmp_path: Path
) -> None:
    cfg = write_config(tmp_path, fake_swarmd.url)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FAKE_EMERGE", "SWARM_"))}
    env.update({"SWARM_DRONE_TOKEN": TOKEN, "FAKE_EMERGE_SECONDS": "0.3",
                "PORTAGE_OVERRIDE_EPREFIX": "/"})
    stderr = (tmp_path / "stderr").open("wb")
    proc = await trio.lowlevel.open_process(
        [str(SWARM_DRONE), "--config", str(cfg)], env=env, stdout=subprocess.DEVNULL,
        stderr=stderr,
    )
    try:
        await fake_swarmd.wait_for(lambda: len(fake_swarmd.heartbeats) >= 1)
        assert fake_swarmd.registrations[0]["name"] == "drone-proc"
        fake_swarmd.add_job("app-misc/hello-2.12")
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
        assert fake_swarmd.completes[0][1]["result"] == "success"

        fake_swarmd.commands.append({"command": "restart"})
        await fake_swarmd.wait_for(lambda: len(fake_swarmd.registrations) == 2)
        assert proc.returncode is None  # the same process, re-executed
        await fake_swarmd.wait_for(
            lambda: fake_swarmd.heartbeats[-1]["session"] == fake_swarmd.session)

        proc.send_signal(signal.SIGTERM)
        with trio.fail_after(10):
            rc = await proc.wait()
        assert rc == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        stderr.close()
    log_text = (tmp_path / "stderr").read_text()
    assert TOKEN not in log_text
    lines = [json.loads(line) for line in log_text.splitlines() if line.startswith("{")]
    assert any(line["message"] == "registered" for line in lines)
    assert any("SIGTERM" in line["message"] for line in lines)
