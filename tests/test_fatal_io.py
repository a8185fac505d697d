"""A failed journal write or fsync (ENOSPC, EIO) is fatal: swarmd exits non-zero, never
answers 'accepted' for it, and a restart recovers everything that was acknowledged."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO, SwarmdProc, free_port, wait_http

pytestmark = pytest.mark.slow


@pytest.mark.parametrize(("what", "errno_name"), [("fsync", "EIO"), ("write", "ENOSPC")])
def test_journal_io_failure_is_fatal_and_loses_nothing(tmp_path: Path, what: str,
                                                       errno_name: str) -> None:
    state = tmp_path / "state"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "harness.fault_swarmd", what, errno_name, "3", "--",
         "--state-dir", str(state), "--listen", f"127.0.0.1:{port}",
         "--config", str(REPO / "tests" / "data" / "empty.toml")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    wait_http(url + "/api/status", proc=proc)
    acked = []
    answers = []
    for i in range(6):
        try:
            r = httpx.post(url + "/api/queue", timeout=5,
                           json={"packages": [f"=a/p{i}-1"], "request_id": f"r{i}"})
            answers.append(r.status_code)
            if r.status_code == 202:
                acked.append(f"r{i}")
        except httpx.HTTPError:
            answers.append(None)
    out, _ = proc.communicate(timeout=20)
    assert proc.returncode not in (0, None), out.decode()
    text = out.decode()
    reason = os.strerror(getattr(__import__("errno"), errno_name))
    assert "fatal" in text, text
    assert reason in text, text
    assert 1 <= len(acked) <= 3, answers  # nothing answered after the failure
    assert 202 not in answers[len(acked):]
    p = SwarmdProc(state, tmp_path / "restart.log").start()
    try:
        for rid in acked:
            assert httpx.get(f"{p.url}/api/requests/{rid}", timeout=5).status_code == 200
    finally:
        assert p.stop() == 0
