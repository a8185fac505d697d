"""swarmd's publisher (swarmd/binhost.py) on real packages built by real portage.

Each check runs ``Binhost`` in a child process with a publisher portage configuration (portage
reads its configuration from the environment once per process), on packages that a real
``emerge --buildpkg`` made in a sandbox.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from demo.portage_swarm import copy_repo
from demo.sandbox import make_publisher_env, make_sandbox

pytestmark = pytest.mark.slow

CHILD = r"""
import json, sys, time
from pathlib import Path
from swarmd.binhost import Binhost, PublishError, sha256_of
root, calls = sys.argv[1], json.loads(sys.argv[2])
bh = Binhost(Path(root))
bh.open()
out = []
for cpv, rel, size, sha in calls:
    if size is None:
        size, sha = sha256_of(Path(root) / rel)
    t0 = time.time()
    try:
        p = bh.publish(cpv, rel, size, sha)
        out.append({"ok": p.path, "build_id": p.build_id, "ts": bh.index_timestamp(),
                    "t": time.time() - t0})
    except PublishError as exc:
        out.append({"error": str(exc)})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Binary packages of libgreet (by two drones: both BUILD_ID 1, different BUILD_TIME) and
    banner, built for real."""
    base = tmp_path_factory.mktemp("built")
    repo = copy_repo(base / "repo")
    files: dict[str, Path] = {}
    for name, atom, drone in (("libgreet", "=swarm-demo/libgreet-1.0", "d1"),
                              ("banner", "=swarm-demo/banner-1.0", "d1"),
                              ("libgreet2", "=swarm-demo/libgreet-1.0", "d2")):
        # libgreet2: another drone's build, so also BUILD_ID 1, but other content
        sb = make_sandbox(base / drone, repo=repo)
        r = sb.emerge("--oneshot", "--buildpkg", atom)
        pkgs = sorted(sb.pkgdir.rglob("*.gpkg.tar"), key=lambda p: p.stat().st_mtime)
        assert pkgs, r.stdout + r.stderr
        keep = base / f"{name}.gpkg.tar"
        shutil.copy(pkgs[-1], keep)
        files[name] = keep
    return files


def publish(binhost: Path, env: dict[str, str], calls: list[tuple[str, str, Any, Any]]
            ) -> list[dict[str, Any]]:
    r = subprocess.run([sys.executable, "-c", CHILD, str(binhost), json.dumps(calls)],
                       env={**os.environ, **env}, capture_output=True, text=True, timeout=120,
                       check=False)
    assert r.returncode == 0, r.stderr
    return list(json.loads(r.stdout.strip().splitlines()[-1]))


def upload(binhost: Path, src: Path, cpv: str, build: str, basename: str = "") -> str:
    cat, pf = cpv.split("/")
    pn = pf.rsplit("-", 1)[0]
    rel = f"{cat}/{pn}/{basename or pf + '-1'}.gpkg.tar.{build}.upload"
    (binhost / rel).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(src, binhost / rel)
    return rel


def emaint(binhost: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["emaint", "binhost", "--check"],
                          env={**os.environ, **env, "PKGDIR": str(binhost)},
                          capture_output=True, text=True, timeout=60, check=False)


def test_publish_checks_and_index(tmp_path: Path, built: dict[str, Path]) -> None:
    env = make_publisher_env(tmp_path / "pub")
    bh = tmp_path / "binhost"
    bh.mkdir()
    lib = "swarm-demo/libgreet-1.0"
    good = upload(bh, built["libgreet"], lib, "b-0000001")
    banner = upload(bh, built["banner"], "swarm-demo/banner-1.0", "b-0000002")
    corrupt = upload(bh, built["banner"], "swarm-demo/banner-1.0", "b-0000003")
    with (bh / corrupt).open("r+b") as fh:
        fh.seek(600)
        fh.write(b"XXXX")
    wrong = upload(bh, built["banner"], lib, "b-0000004")
    from swarmd.binhost import sha256_of

    size, sha = sha256_of(built["banner"])
    res = publish(bh, env, [
        (lib, good, None, None),
        ("swarm-demo/banner-1.0", banner, None, None),
        # the drone's report is for the file before it was damaged
        ("swarm-demo/banner-1.0", corrupt, size, sha),
        (lib, "swarm-demo/libgreet/libgreet-1.0-9.gpkg.tar.b-0000005.upload", 1, "0" * 64),
        (lib, wrong, None, None),
    ])
    assert res[0]["ok"] == "swarm-demo/libgreet/libgreet-1.0-1.gpkg.tar"
    assert res[1]["ok"] == "swarm-demo/banner/banner-1.0-1.gpkg.tar"
    assert res[2]["error"].startswith("corrupt upload")
    assert "never arrived" in res[3]["error"]
    assert "not name" in res[4]["error"] or "holds swarm-demo/banner" in res[4]["error"]
    # Two publishes never share an index TIMESTAMP (portage refetches only a newer one).
    assert res[1]["ts"] > res[0]["ts"]
    em = emaint(bh, env)
    assert em.returncode == 0, em.stdout + em.stderr
    text = (bh / "Packages").read_text()
    assert text.count("CPV: swarm-demo/libgreet-1.0") == 1
    assert "PATH: swarm-demo/libgreet/libgreet-1.0-1.gpkg.tar" in text


def test_redo_after_crash_and_collision(tmp_path: Path, built: dict[str, Path]) -> None:
    env = make_publisher_env(tmp_path / "pub")
    bh = tmp_path / "binhost"
    bh.mkdir()
    lib = "swarm-demo/libgreet-1.0"
    rel = upload(bh, built["libgreet"], lib, "b-0000001")
    first = publish(bh, env, [(lib, rel, None, None)])
    assert "ok" in first[0]
    # A crash after the move (or after the index write): the same publish is run again.
    final = bh / first[0]["ok"]
    from swarmd.binhost import sha256_of

    size, sha = sha256_of(final)
    again = publish(bh, env, [(lib, rel, size, sha)])
    assert again[0]["ok"] == first[0]["ok"]
    # Another build of the same CPV whose BUILD_ID is already published with other content.
    other = upload(bh, built["libgreet2"], lib, "b-0000002")
    clash = publish(bh, env, [(lib, other, None, None)])
    assert "collision" in clash[0]["error"]
    assert (bh / (Path(rel).name)).exists() is False
    assert emaint(bh, env).returncode == 0
    assert (bh / "Packages").read_text().count("CPV: swarm-demo/libgreet-1.0") == 1


def test_hand_edited_index_is_kept(tmp_path: Path, built: dict[str, Path]) -> None:
    """An operator's own package added with portage meanwhile stays in the index."""
    env = make_publisher_env(tmp_path / "pub")
    bh = tmp_path / "binhost"
    bh.mkdir()
    # The operator drops a package in and reindexes with portage's own tool.
    dest = bh / "swarm-demo/banner/banner-1.0-1.gpkg.tar"
    dest.parent.mkdir(parents=True)
    shutil.copy(built["banner"], dest)
    fix = subprocess.run(["emaint", "binhost", "--fix"],
                         env={**os.environ, **env, "PKGDIR": str(bh)},
                         capture_output=True, text=True, timeout=60, check=False)
    assert fix.returncode == 0, fix.stdout + fix.stderr
    lib = "swarm-demo/libgreet-1.0"
    rel = upload(bh, built["libgreet"], lib, "b-0000001")
    res = publish(bh, env, [(lib, rel, None, None)])
    assert "ok" in res[0]
    text = (bh / "Packages").read_text()
    assert "CPV: swarm-demo/banner-1.0" in text
    assert "CPV: swarm-demo/libgreet-1.0" in text
    assert emaint(bh, env).returncode == 0


def test_client_over_http_sees_a_publish_made_seconds_after_its_copy(
        tmp_path: Path, built: dict[str, Path]) -> None:
    """Portage asks for the index with If-Modified-Since = its copy's TIMESTAMP + 5 s; a publish
    within those 5 s must still reach it (the index files' mtime is TIMESTAMP + 5). Failed
    before: the client got 304 and kept planning to compile banner from source."""
    import socket
    import time

    env = make_publisher_env(tmp_path / "pub")
    bh = tmp_path / "binhost"
    bh.mkdir()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    http = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                             "--directory", str(bh), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = make_sandbox(tmp_path / "client", repo=copy_repo(tmp_path / "repo"),
                              binhost_url=f"http://127.0.0.1:{port}")
        lib = "swarm-demo/libgreet-1.0"
        res = publish(bh, env, [(lib, upload(bh, built["libgreet"], lib, "b-0000001"),
                                 None, None)])
        assert "ok" in res[0]
        deadline = time.monotonic() + 10
        while True:
            first = client.emerge("-pv", "--getbinpkgonly", "=" + lib)
            if "[binary" in first.stdout or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        assert "[binary" in first.stdout, first.stdout + first.stderr
        t_copy = time.time()
        res = publish(bh, env, [("swarm-demo/banner-1.0",
                                 upload(bh, built["banner"], "swarm-demo/banner-1.0",
                                        "b-0000002"), None, None)])
        assert "ok" in res[0]
        assert time.time() - t_copy < 5, "too slow to test the 5 s window"
        second = client.emerge("-pv", "--getbinpkgonly", "=swarm-demo/banner-1.0")
        assert "[binary" in second.stdout, second.stdout + second.stderr
    finally:
        http.terminate()
        http.wait(10)


def test_reindex_after_a_lost_index_keeps_digests(tmp_path: Path, built: dict[str, Path]) -> None:
    """Many published packages missing from the index: one reindex with portage's own
    `emaint binhost --fix`; the result passes `emaint binhost --check` (digests included)."""
    env = make_publisher_env(tmp_path / "pub")
    bh = tmp_path / "binhost"
    bh.mkdir()
    res = publish(bh, env, [
        ("swarm-demo/libgreet-1.0", upload(bh, built["libgreet"], "swarm-demo/libgreet-1.0",
                                           "b-0000001"), None, None),
        ("swarm-demo/banner-1.0", upload(bh, built["banner"], "swarm-demo/banner-1.0",
                                         "b-0000002"), None, None)])
    assert all("ok" in r for r in res)
    for name in ("Packages", "Packages.gz"):
        (bh / name).unlink()
    r = subprocess.run([sys.executable, "-c",
                        "import sys; from pathlib import Path; from swarmd.binhost import "
                        "Binhost; b = Binhost(Path(sys.argv[1])); b.open(); b.reindex()",
                        str(bh)], env={**os.environ, **env}, capture_output=True, text=True,
                       timeout=120, check=False)
    assert r.returncode == 0, r.stderr
    text = (bh / "Packages").read_text()
    assert text.count("MD5:") == 2, text
    assert "CPV: swarm-demo/banner-1.0" in text
    em = emaint(bh, env)
    assert em.returncode == 0, em.stdout + em.stderr


def test_uploads_nobody_will_publish_are_swept(tmp_path: Path) -> None:
    """A refused report (superseded lease) leaves its upload behind; later it is removed,
    unless a publishing build names it or its build is unfinished (its report may come).
    Fresh uploads are kept whatever their mtime (rsync -a keeps the drone's)."""
    from swarmd.binhost import Binhost

    bh = Binhost(tmp_path)
    d = tmp_path / "cat" / "pn"
    d.mkdir(parents=True)
    orphan, publishing, unfinished = (d / f"pn-1-1.gpkg.tar.b-{i}.upload" for i in (1, 2, 3))
    for f in (orphan, publishing, unfinished):
        f.write_bytes(b"x")
        os.utime(f, (1e9, 1e9))  # an old mtime from the drone
    (d / "pn-1-1.gpkg.tar").write_bytes(b"published")  # never touched
    assert bh.sweep_uploads(set(), 86400, set()) == []  # arrived just now: kept
    gone = bh.sweep_uploads({"cat/pn/pn-1-1.gpkg.tar.b-2.upload"}, -1, {"b-3"})
    assert gone == ["cat/pn/pn-1-1.gpkg.tar.b-1.upload"]
    assert not orphan.exists()
    assert publishing.exists()
    assert unfinished.exists()
    assert (d / "pn-1-1.gpkg.tar").exists()
    assert bh.discard_upload("cat/pn/pn-1-1.gpkg.tar.b-3.upload")
    assert not unfinished.exists()
    assert not bh.discard_upload("cat/pn/pn-1-1.gpkg.tar")  # only uploads
    assert (d / "pn-1-1.gpkg.tar").exists()
