"""The agent's plain parts: log buffer, artifact lookup and naming, outbox, config."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from droned import artifact
from droned.config import DroneConfig, load_config, substitute
from droned.logbuffer import LogBuffer
from droned.main import main
from droned.outbox import Outbox
from swarmlib.errors import ConfigError


def test_log_buffer_is_bounded_and_marks_drops() -> None:
    buf = LogBuffer(max_bytes=100)
    for i in range(50):
        buf.append(f"line {i:03d}\n".encode())  # 9 bytes each: 450 in all
    assert len(buf) <= 100
    out = buf.take(1000)
    assert out.startswith(b"\n[swarm-drone: 350 bytes of build log dropped]\n")
    assert out.endswith(b"line 049\n")
    assert len(buf) == 0
    assert buf.take(1000) == b""


def test_log_buffer_chunks_unshift_and_tail() -> None:
    buf = LogBuffer(max_bytes=1000, tail_lines=2)
    buf.append(b"old\n")
    buf.append(b"a" * 30 + b"\n[ 42%] Building\nlast ")
    first = buf.take(10)
    assert first == b"old\n" + b"a" * 6
    buf.unshift(first)
    assert buf.take(1000).startswith(b"old\n" + b"a" * 30)
    assert buf.percent == 42.0
    # the last 2 complete lines and the unfinished one
    assert buf.tail() == "a" * 30 + "\n[ 42%] Building\nlast "


def test_substitute_inside_longer_strings() -> None:
    argv = substitute(["emerge", "={cpv}", "{x}", "--jobs={cores}"], {"cpv": "a/b-1", "cores": "4"})
    assert argv == ["emerge", "=a/b-1", "{x}", "--jobs=4"]


def touch(p: Path, mtime: float) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    os.utime(p, (mtime, mtime))
    return p


def test_find_package_layouts(tmp_path: Path) -> None:
    now = time.time()
    touch(tmp_path / "dev-libs/foo/foo-1.0-1.gpkg.tar", now - 100)  # older than the build
    new = touch(tmp_path / "dev-libs/foo/foo-1.0-2.gpkg.tar", now + 1)
    touch(tmp_path / "dev-libs/foo/foo-1.0.1-1.gpkg.tar", now + 5)  # another version
    touch(tmp_path / "dev-libs/foo/foo-1.0-r1-1.gpkg.tar", now + 5)  # another revision
    assert artifact.find_package(tmp_path, "dev-libs/foo-1.0", since=now) == new
    classic = touch(tmp_path / "app-misc/bar-2.tbz2", now + 1)
    assert artifact.find_package(tmp_path, "app-misc/bar-2", since=now) == classic
    assert artifact.find_package(tmp_path, "app-misc/bar-2", since=now + 100) is None
    assert artifact.find_package(tmp_path, "app-misc/none-1", since=now) is None


def test_binhost_upload_names_are_unique_per_build_and_not_packages() -> None:
    p = Path("/pkgdir/dev-libs/foo/foo-1.0-r2-7.gpkg.tar")
    a = artifact.binhost_relpath("dev-libs/foo-1.0-r2", p, build_id="b-000123")
    b = artifact.binhost_relpath("dev-libs/foo-1.0-r2", p, build_id="b-000124")
    assert a == "dev-libs/foo/foo-1.0-r2-7.gpkg.tar.b-000123.upload"
    assert a != b
    # Same file name in two drones' PKGDIRs (both wrote BUILD_ID 7): still apart.
    assert artifact.binhost_relpath("dev-libs/foo-1.0-r2", Path("/other/foo-1.0-r2-7.gpkg.tar"),
                                    build_id="b-000124") == b
    x = artifact.binhost_relpath("app-misc/bar-2", Path("/p/app-misc/bar-2.tbz2"),
                                 build_id="../x y")
    assert x == "app-misc/bar/bar-2.tbz2..._x_y.upload"  # one name, no "/"
    for name in (a, b, x):
        assert not name.endswith(artifact.SUFFIXES)
        assert ".." not in name.split("/")


def test_digest(tmp_path: Path) -> None:
    p = tmp_path / "f"
    p.write_bytes(b"abc")
    assert artifact.digest(p) == (
        3, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


def test_outbox_survives_reopen(tmp_path: Path) -> None:
    box = Outbox(tmp_path)
    box.put("b-1", {"lease": "L1", "result": "success"})
    box.put("b/2", {"lease": "L2", "result": "failed"})
    again = Outbox(tmp_path)
    assert sorted(b for b, _ in again.pending()) == ["b-1", "b/2"]
    again.remove("b-1")
    assert [b for b, _ in Outbox(tmp_path).pending()] == ["b/2"]


def test_config_defaults_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SWARM_DRONE_TOKEN", "sekrit")
    monkeypatch.setenv("SWARM_DRONE_SLOTS", "2")
    cfg = load_config(["--binhost-target", "/srv/binhost", "--state-dir", str(tmp_path),
                       "--name", "drone-izar"])
    assert cfg.token == "sekrit"
    assert cfg.slots == 2
    assert cfg.cores == (os.cpu_count() or 1)
    assert cfg.build_command == ["emerge", "--oneshot", "--buildpkg", "--usepkg", "--getbinpkg",
                                 "--usepkg-exclude={cp}", "={cpv}"]
    assert cfg.build_env == {}
    assert cfg.read_target is True
    assert "sekrit" not in repr(cfg)
    assert isinstance(cfg, DroneConfig)


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["--slots", "0"], "slots"),
        (["--orchestrator", "ftp://x"], "orchestrator"),
        (["--binhost-target", ""], "binhost_target"),
        (["--config", "/nonexistent/drone.toml"], "does not exist"),
    ],
)
def test_bad_config_exits_2_with_one_line(
    argv: list[str], needle: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--state-dir", str(tmp_path), "--binhost-target", "/b", *argv])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert needle in err


def test_build_env_is_a_toml_table(tmp_path: Path) -> None:
    conf = tmp_path / "drone.toml"
    conf.write_text('read_target = false\n[build_env]\nPORTAGE_CONFIGROOT = "/srv/cfg"\n'
                    'NO_COLOR = "1"\n')
    cfg = load_config(["--config", str(conf), "--state-dir", str(tmp_path),
                       "--binhost-target", "/b"])
    assert cfg.build_env == {"PORTAGE_CONFIGROOT": "/srv/cfg", "NO_COLOR": "1"}
    assert cfg.read_target is False
    # Every instance gets its own table.
    assert DroneConfig().build_env is not DroneConfig().build_env


@pytest.mark.parametrize(
    ("toml", "needle"),
    [
        ("[build_env]\nMAKEOPTS = 4\n", "build_env"),
        ('build_env = "PORTAGE_CONFIGROOT=/x"\n', "build_env"),
        ('build_command = ["emerge", "--oneshot"]\n', "build_command"),
    ],
)
def test_bad_build_config(tmp_path: Path, toml: str, needle: str) -> None:
    conf = tmp_path / "drone.toml"
    conf.write_text(toml)
    with pytest.raises(ConfigError, match=needle):
        load_config(["--config", str(conf), "--state-dir", str(tmp_path),
                     "--binhost-target", "/b"])


def test_cp_placeholder() -> None:
    argv = substitute(DroneConfig().build_command, {"cpv": "dev-libs/foo-1.0-r1",
                                                    "cp": "dev-libs/foo"})
    assert argv[-2:] == ["--usepkg-exclude=dev-libs/foo", "=dev-libs/foo-1.0-r1"]
