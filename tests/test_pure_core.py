"""The pure core never imports trio (STYLE.md: a pure core inside a thin Trio shell)."""

from __future__ import annotations

import os
import subprocess
import sys

CORE = ["swarmd.state", "swarmd.scheduler", "swarmd.submission", "swarmd.atoms",
        "swarmd.journal"]

PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m == "trio" or m.startswith("trio."))))
"""


def run_probe(*modules: str) -> str:
    env = {**os.environ, "PORTAGE_OVERRIDE_EPREFIX": "/"}
    proc = subprocess.run([sys.executable, "-c", PROBE, *modules], capture_output=True,
                          text=True, env=env, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.strip().splitlines()[-1]


def test_core_does_not_import_trio() -> None:
    assert run_probe(*CORE) == "[]"


def test_the_probe_can_see_trio() -> None:
    """The same probe notices trio when the shell is imported (so the test above can fail)."""
    assert '"trio"' in run_probe("swarmd.service")
