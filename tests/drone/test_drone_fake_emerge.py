"""The fake emerge writes a real, deterministic GPKG-layout tar and fails on request."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from droned import fake_emerge


def run(pkgdir: Path, atom: str, **env: str) -> subprocess.CompletedProcess[str]:
    e = {k: v for k, v in os.environ.items() if not k.startswith("FAKE_EMERGE_")}
    e.update({"PORTAGE_OVERRIDE_EPREFIX": "/", "FAKE_EMERGE_SECONDS": "0.1", **env})
    return subprocess.run(
        [sys.executable, "-m", "droned.fake_emerge", "--oneshot", "--buildpkg",
         "--pkgdir", str(pkgdir), atom],
        capture_output=True, text=True, env=e, timeout=30, check=False,
    )


def test_writes_a_valid_gpkg_tar(tmp_path: Path) -> None:
    res = run(tmp_path, "=dev-libs/openssl-3.3.2-r1")
    assert res.returncode == 0, res.stdout
    assert ">>> Emerging (1 of 1) dev-libs/openssl-3.3.2-r1::gentoo" in res.stdout
    assert ">>> Compiling source in" in res.stdout
    assert "make -j" in res.stdout
    assert "[100%]" in res.stdout
    path = tmp_path / "dev-libs/openssl/openssl-3.3.2-r1-1.gpkg.tar"
    with tarfile.open(path) as tar:
        names = tar.getnames()
        assert names == [f"openssl-3.3.2-r1/{n}"
                         for n in ("gpkg-1", "metadata.tar.xz", "image.tar.xz", "Manifest")]
        meta = tar.extractfile("openssl-3.3.2-r1/metadata.tar.xz")
        assert meta is not None
        with tarfile.open(fileobj=io.BytesIO(meta.read())) as inner:
            cat = inner.extractfile("metadata/CATEGORY")
            assert cat is not None
            assert cat.read() == b"dev-libs\n"
        image = tar.extractfile("openssl-3.3.2-r1/image.tar.xz")
        assert image is not None
        with tarfile.open(fileobj=io.BytesIO(image.read())) as inner:
            assert "image/usr/bin/openssl" in inner.getnames()
    assert not list(tmp_path.rglob("*.partial"))


def test_content_is_deterministic_and_build_ids_increase(tmp_path: Path) -> None:
    assert run(tmp_path, "=app-misc/foo-1.0").returncode == 0
    assert run(tmp_path, "=app-misc/foo-1.0").returncode == 0
    one = tmp_path / "app-misc/foo/foo-1.0-1.gpkg.tar"
    two = tmp_path / "app-misc/foo/foo-1.0-2.gpkg.tar"
    assert one.read_bytes() == two.read_bytes()
    assert one.read_bytes() != fake_emerge.package_bytes("app-misc/foo-1.1")


def test_failing_package(tmp_path: Path) -> None:
    res = run(tmp_path, "=app-misc/bad-2", FAKE_EMERGE_FAIL="app-misc/other-1,=app-misc/bad-2")
    assert res.returncode == 1
    assert "ERROR: app-misc/bad-2::gentoo failed (compile phase)" in res.stdout
    assert not list(tmp_path.rglob("*.gpkg.tar"))


def test_no_package_mode(tmp_path: Path) -> None:
    res = run(tmp_path, "=app-misc/nopkg-2", FAKE_EMERGE_NOPKG="app-misc/nopkg-2")
    assert res.returncode == 0
    assert not list(tmp_path.rglob("*.gpkg.tar"))


def test_bad_atom(tmp_path: Path) -> None:
    assert run(tmp_path, "=notanatom").returncode == 1


def test_compile_time_scaling(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    times = tmp_path / "times.json"
    times.write_text('{"dev-lang/rust-1.80.0": 800, "sys-devel/gcc": 400}')
    for k in ("FAKE_EMERGE_SECONDS", "FAKE_EMERGE_SPEED", "FAKE_EMERGE_CORES"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("FAKE_EMERGE_TIMES", str(times))
    monkeypatch.setenv("FAKE_EMERGE_CORES", "32")
    assert fake_emerge.compile_seconds("dev-lang/rust-1.80.0", None) == 200.0
    assert fake_emerge.compile_seconds("sys-devel/gcc-14.2.0", None) == 100.0  # by cat/pn
    monkeypatch.setenv("FAKE_EMERGE_SPEED", "100")
    assert fake_emerge.compile_seconds("dev-lang/rust-1.80.0", None) == 2.0
    assert fake_emerge.compile_seconds("dev-lang/rust-1.80.0", 5.0) == 0.05
