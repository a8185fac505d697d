"""swarmlib.daemon: the one stop and start-up-error rule of swarmd, gatewayd and swarm-drone."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import trio

from swarmlib.daemon import ListenFailed, find, start_error, watch_signals


def test_find_digs_into_exception_groups() -> None:
    inner = OSError(errno.EADDRINUSE, "Address already in use")
    group = BaseExceptionGroup("outer", [ValueError("x"), ExceptionGroup("in", [inner])])
    assert find(group, (OSError,)) is inner
    assert find(group, (KeyError,)) is None
    assert find(inner, (OSError,)) is inner


@pytest.mark.parametrize(("err", "code", "words"), [
    (errno.EADDRINUSE, 2, "address already in use: another process listens there"),
    (errno.EADDRNOTAVAIL, 2, "no interface has that address"),
    (errno.EACCES, 2, "ports below 1024 need privileges"),
    (errno.ENOSPC, 1, "cannot listen on 0.0.0.0:8090: no space left on device"),
])
def test_start_error_is_one_line(capsys: pytest.CaptureFixture[str], err: int, code: int,
                                 words: str) -> None:
    exc = ListenFailed("0.0.0.0:8090", OSError(
        err, os.strerror(err) if err != errno.EADDRINUSE else "Address already in use"))
    assert start_error("gatewayd", exc) == code
    out = capsys.readouterr()
    assert out.out == ""
    lines = out.err.splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("gatewayd: ")
    assert words in lines[0]
    if code == 2:
        assert "0.0.0.0:8090" in lines[0]


async def test_first_signal_drains_second_stops() -> None:
    calls: list[str] = []
    drained, stopped = trio.Event(), trio.Event()

    def drain() -> None:
        calls.append("drain")
        drained.set()

    def now() -> None:
        calls.append("now")
        stopped.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, drain, now)
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            await drained.wait()
        os.kill(os.getpid(), signal.SIGINT)
        with trio.fail_after(5):
            await stopped.wait()
        nursery.cancel_scope.cancel()
    assert calls == ["drain", "now"]


async def test_without_second_the_watcher_ends_after_the_first() -> None:
    calls: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_signals, lambda: calls.append("drain"))
            os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["drain"]


def test_an_oserror_that_is_not_a_bind_gets_no_listen_advice(
        capsys: pytest.CaptureFixture[str]) -> None:
    """A state directory owned by root is EACCES too: it must not read as a port problem."""
    exc = PermissionError(errno.EACCES, "Permission denied", "/var/lib/build-swarm/journal")
    assert start_error("swarmd", exc) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("swarmd: cannot start: ")
    assert "/var/lib/build-swarm/journal" in line
    assert "listen" not in line
    assert "1024" not in line
