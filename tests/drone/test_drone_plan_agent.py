"""The agent with an emerge build command: plan check, probe, target (a fake ``emerge`` on the
PATH that ``build_env`` gives, and a fake target reader)."""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

import pytest
import trio

from droned import agent as agent_mod
from droned.agent import Agent
from swarmlib.errors import ConfigError

from .fakes import IDENTITY, FakeSwarmd, drone_config

FAKE_EMERGE = '''#!{python}
"""emerge for the plan tests: --pretend prints plans.json[cpv]; a build leaves a marker."""
import json, os, sys
from pathlib import Path
cpv = [a for a in sys.argv[1:] if a.startswith("=")][-1][1:]
here = Path(os.environ["FAKE_PLAN_DIR"])
with open(here / "argv.log", "a") as fh:
    fh.write(json.dumps(sys.argv[1:]) + "\\n")
if "--pretend" in sys.argv:
    plan = json.loads((here / "plans.json").read_text())[cpv]
    print(plan["out"])
    sys.exit(plan["rc"])
(here / ("built-" + cpv.replace("/", "_"))).write_text("x")
print(">>> Completed (1 of 1) " + cpv)
'''

HEAD = "\nThese are the packages that would be merged, in order:\n\n"
PLANS = {
    "swarm-demo/hello-1.0": {"rc": 0, "out": HEAD + (
        "[binary   R    ] swarm-demo/libgreet-1.0-1\n"
        "[ebuild  N     ] swarm-demo/buildtool-1.0\n"
        '[ebuild  N     ] swarm-demo/hello-1.0  USE="-shout"\n')},
    "swarm-demo/libgreet-1.0": {"rc": 0, "out": HEAD + (
        '[ebuild  N     ] swarm-demo/libgreet-1.0  USE="unicode"\n')},
    "swarm-demo/gone-1.0": {"rc": 1, "out": (
        'emerge: there are no ebuilds to satisfy "=swarm-demo/gone-1.0".\n')},
}

T1 = {"arch": "amd64", "chost": "x86_64-pc-linux-gnu", "profile": "default",
      "repos": {"swarm-demo": "tree:1"}}
T2 = {**T1, "repos": {"swarm-demo": "tree:2"}}


class FakeTargetReader:
    """Stands in for ``swarmlib.target.read_target``: answers in turn, then the last one."""

    def __init__(self, answers: list[dict[str, Any] | Exception]) -> None:
        self.answers = answers
        self.envs: list[dict[str, str]] = []

    def __call__(self, env: dict[str, str] | None = None, *, timeout: float = 60.0) -> Any:
        self.envs.append(dict(env or {}))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            raise answer
        return answer


@pytest.fixture
def plan_dir(tmp_path: Path) -> Path:
    d = tmp_path / "fake-emerge"
    d.mkdir()
    exe = d / "emerge"
    exe.write_text(FAKE_EMERGE.format(python=sys.executable))
    exe.chmod(0o755)
    (d / "plans.json").write_text(json.dumps(PLANS))
    return d


def emerge_config(tmp_path: Path, url: str, plan_dir: Path, **over: Any) -> Any:
    empty_prefix = tmp_path / "no-portage-here"
    empty_prefix.mkdir(exist_ok=True)
    build_env = {
        "PATH": f"{plan_dir}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "FAKE_PLAN_DIR": str(plan_dir),
        "PORTAGE_OVERRIDE_EPREFIX": str(empty_prefix),  # the probe finds nothing there
    }
    return drone_config(
        tmp_path, url,
        build_command=["emerge", "--oneshot", "--buildpkg", "--usepkg-exclude={cp}", "={cpv}"],
        build_env=build_env, **over,
    )


async def test_plan_refusal_returns_the_lease_unbuildable_and_target_follows(
    fake_swarmd: FakeSwarmd, tmp_path: Path, plan_dir: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    reader = FakeTargetReader([ConfigError("cannot read the portage target: no profile"),
                               T1, T2])
    monkeypatch.setattr(agent_mod, "read_target", reader)
    cfg = emerge_config(tmp_path, fake_swarmd.url, plan_dir)
    fake_swarmd.add_job("swarm-demo/hello-1.0")
    fake_swarmd.add_job("swarm-demo/gone-1.0")
    agent = Agent(cfg, identity=IDENTITY)
    with caplog.at_level(logging.ERROR, logger="droned.agent"):
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            await fake_swarmd.wait_for(lambda: len(fake_swarmd.completes) == 2)
            # The target read again after the builds goes out with a heartbeat, once.
            await fake_swarmd.wait_for(
                lambda: any("target" in hb for hb in fake_swarmd.heartbeats))
            n = len(fake_swarmd.heartbeats)
            await fake_swarmd.wait_for(lambda: len(fake_swarmd.heartbeats) >= n + 2)
            agent.stop()

    # A failed read at start: one clear line, a retry, and no work before the target is known.
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1
    assert "cannot read the portage target" in errors[0]
    assert fake_swarmd.registrations[0]["target"] == T1
    assert reader.envs[0]["FAKE_PLAN_DIR"] == str(plan_dir)  # read under build_env
    sent = [hb["target"] for hb in fake_swarmd.heartbeats if "target" in hb]
    assert sent == [T2]

    (b1, hello), (_b2, gone) = fake_swarmd.completes
    assert hello["result"] == "returned"
    assert hello["unbuildable"] is True
    assert hello["error"] == "plan: would compile swarm-demo/buildtool-1.0 from source"
    assert hello["artifact"] is None
    assert gone["result"] == "returned"
    assert gone["unbuildable"] is True
    assert gone["error"].startswith("plan: emerge --pretend failed with exit code 1")
    assert "there are no ebuilds to satisfy" in gone["error"]
    assert not [n for n in os.listdir(plan_dir) if n.startswith("built-")]  # nothing compiled
    calls = [json.loads(line) for line in (plan_dir / "argv.log").read_text().splitlines()]
    assert calls[0] == ["--oneshot", "--buildpkg", "--usepkg-exclude=swarm-demo/hello",
                        "=swarm-demo/hello-1.0", "--pretend", "--color=n"]
    log_text = bytes(fake_swarmd.logs[b1]).decode()
    assert "[ebuild  N     ] swarm-demo/buildtool-1.0" in log_text  # the plan is in the log
    assert "not building: plan: would compile" in log_text


async def test_good_plan_builds_then_the_probe_must_find_the_package(
    fake_swarmd: FakeSwarmd, tmp_path: Path, plan_dir: Path,
) -> None:
    cfg = emerge_config(tmp_path, fake_swarmd.url, plan_dir, read_target=False)
    fake_swarmd.add_job("swarm-demo/libgreet-1.0", use=["unicode"])
    agent = Agent(cfg, identity=IDENTITY)
    async with trio.open_nursery() as nursery:
        await nursery.start(agent.run)
        await fake_swarmd.wait_for(lambda: bool(fake_swarmd.completes))
        agent.stop()
    assert "target" not in fake_swarmd.registrations[0]
    assert (plan_dir / "built-swarm-demo_libgreet-1.0").exists()
    _b, body = fake_swarmd.completes[0]
    # The fake emerge wrote no package and installed nothing: portage says so, nothing synced.
    assert body["result"] == "failed"
    assert body["error"].startswith("probe: cannot find the package this build produced")
    assert "unbuildable" not in body
    assert not (tmp_path / "binhost").exists() or not any((tmp_path / "binhost").rglob("*.*"))
