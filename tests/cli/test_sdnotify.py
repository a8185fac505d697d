"""READY=1 / STOPPING=1 over a real unix datagram socket."""

from __future__ import annotations

import os
import socket
from pathlib import Path

from swarmlib import sdnotify


def test_noop_without_notify_socket() -> None:
    assert sdnotify.ready({}) is False
    assert sdnotify.notify("READY=1", {"NOTIFY_SOCKET": ""}) is False


def test_path_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        assert sdnotify.ready({"NOTIFY_SOCKET": path}) is True
        assert sdnotify.stopping({"NOTIFY_SOCKET": path}) is True
        assert sock.recv(64) == b"READY=1"
        assert sock.recv(64) == b"STOPPING=1"


def test_abstract_socket() -> None:
    name = f"build-swarm-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind("\0" + name)
        assert sdnotify.ready({"NOTIFY_SOCKET": "@" + name}) is True
        assert sock.recv(64) == b"READY=1"


def test_missing_socket_is_reported_not_raised(tmp_path: Path) -> None:
    assert sdnotify.ready({"NOTIFY_SOCKET": str(tmp_path / "gone")}) is False
    assert sdnotify.ready({"NOTIFY_SOCKET": "relative"}) is False
