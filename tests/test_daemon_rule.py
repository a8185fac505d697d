"""swarmlib.daemon: the one stop and start-up-error rule of swarmd, gatewayd and swarm-drone."""

from __future__ import annotations

import errno
import os
import signal

import pytest
import trio

from swarmlib.daemon import find, start_error, watch_signals


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
    (errno.ENOSPC, 1, "cannot start"),
])
def test_start_error_is_one_line(capsys: pytest.CaptureFixture[str], err: int, code: int,
                                 words: str) -> None:
    exc = OSError(err, os.strerror(err) if err != errno.EADDRINUSE else "Address already in use")
    assert start_error("gatewayd", "0.0.0.0:8090", exc) == code
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
    async with trio.open_nursery() as nursery:
        await nursery.start(watch_signals, lambda: calls.append("drain"),
                            lambda: calls.append("now"))
        os.kill(os.getpid(), signal.SIGTERM)
        with trio.fail_after(5):
            while calls != ["drain"]:
                await trio.sleep(0.01)
        os.kill(os.getpid(), signal.SIGINT)
        with trio.fail_after(5):
            while calls != ["drain", "now"]:
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()


async def test_without_second_the_watcher_ends_after_the_first() -> None:
    calls: list[str] = []
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(watch_signals, lambda: calls.append("drain"))
            os.kill(os.getpid(), signal.SIGTERM)
    assert calls == ["drain"]
