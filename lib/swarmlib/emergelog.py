"""Compile times from /var/log/emerge.log. Pure: lines in, durations out.

Theory of operation. Portage's ``emergelog()`` writes ``"<epoch>: <message>"`` lines. For every
package it merges, emerge logs

    1700000000:  >>> emerge (1 of 3) dev-libs/openssl-3.3.2 to /
    1700000001:  === (1 of 3) Compiling/Merging (dev-libs/openssl-3.3.2::/var/db/repos/...)
    1700000300:  ::: completed emerge (1 of 3) dev-libs/openssl-3.3.2 to /

and for a binary package ``=== (2 of 3) Merging Binary (cat/pkg-1.0::/var/cache/binpkgs/...)``
instead of Compiling/Merging. With ``--jobs`` the lines of several packages interleave, so a start
is paired with its completion by (CPV, root), never by position.

A start is *open* until its completion. An open start is dropped (never counted) when

- the same CPV starts again before it completed (the first attempt failed or was interrupted),
- the emerge session ends without completing it (``*** exiting unsuccessfully ...``,
  ``*** terminating.``) or a new session starts (``Started emerge on:``): a failed build under
  ``--keep-going`` or an interrupted one has no completion line, only the session end.

Binary merges are not compile times and are skipped. Lines that match none of this (elog
messages, sync lines, damaged lines) are ignored.

Aggregation per ``cat/pn``: the median of the most recent ``RECENT`` source builds, so one odd
build (ccache cold, a loaded machine) does not dominate and old hardware ages out. Per CPV: the
most recent build.

Known limit: when two emerge processes write the log at once, the start or end of one session
drops the open builds of the other; the parser prefers losing a sample to recording a wrong one.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable

import attrs

RECENT = 5

_LINE = re.compile(r"^(?P<t>\d+(?:\.\d+)?):\s+(?P<msg>.*?)\s*$")
_START = re.compile(r"^>>> emerge \((?P<n>\d+) of (?P<m>\d+)\) (?P<cpv>\S+) to (?P<root>\S+)$")
_DONE = re.compile(
    r"^::: completed emerge \((?P<n>\d+) of (?P<m>\d+)\) (?P<cpv>\S+) to (?P<root>\S+)$"
)
_BINARY = re.compile(r"^=== \(\d+ of \d+\) Merging Binary \((?P<cpv>[^:)\s]+)::")
_SESSION_END = ("*** exiting unsuccessfully", "*** terminating.")
_SESSION_START = "Started emerge on:"


@attrs.frozen(kw_only=True)
class Build:
    """One completed source build."""

    cpv: str
    cp: str
    root: str
    started: int
    finished: int

    @property
    def duration_s(self) -> int:
        return self.finished - self.started


@attrs.frozen(kw_only=True)
class History:
    builds: tuple[Build, ...]  # completed source builds, in the order they completed
    binary: int  # binary merges skipped
    unfinished: int  # starts that never completed (failed, interrupted, restarted)

    def per_cpv(self) -> dict[str, int]:
        """The most recent duration of each CPV."""
        out: dict[str, int] = {}
        for b in self.builds:
            out[b.cpv] = b.duration_s
        return out

    def per_cp(self) -> dict[str, float]:
        """The median of the last ``RECENT`` builds of each ``cat/pn``."""
        samples: dict[str, list[int]] = {}
        for b in self.builds:
            samples.setdefault(b.cp, []).append(b.duration_s)
        return {cp: float(statistics.median(d[-RECENT:])) for cp, d in samples.items()}

    def longest(self, n: int = 10) -> list[tuple[str, float]]:
        """The ``n`` slowest packages by their aggregated time, slowest first."""
        return sorted(self.per_cp().items(), key=lambda kv: (-kv[1], kv[0]))[:n]


@attrs.define
class _Open:
    started: int
    binary: bool = False


def cpv_key(cpv: str) -> str | None:
    """``cat/pn`` of a CPV by portage's own rules, or None when it is not a CPV."""
    from portage.versions import catpkgsplit

    split = catpkgsplit(cpv)
    if not split or split[0] is None or split[0] == "null":
        return None
    return f"{split[0]}/{split[1]}"


def parse(lines: Iterable[str]) -> History:
    """Pair starts with completions; see the module comment for what is dropped."""
    open_: dict[tuple[str, str], _Open] = {}
    builds: list[Build] = []
    binary = 0
    unfinished = 0
    for raw in lines:
        m = _LINE.match(raw)
        if m is None:
            continue
        t = int(float(m.group("t")))
        msg = m.group("msg")
        if msg.startswith(">>> emerge ("):
            s = _START.match(msg)
            if s is None:
                continue
            k = (s.group("cpv"), s.group("root"))
            if k in open_:
                unfinished += 1
            open_[k] = _Open(started=t)
        elif msg.startswith("=== ("):
            b = _BINARY.match(msg)
            if b is None:
                continue
            for (cpv, _root), start in open_.items():
                if cpv == b.group("cpv"):
                    start.binary = True
        elif msg.startswith("::: completed emerge ("):
            d = _DONE.match(msg)
            if d is None:
                continue
            k = (d.group("cpv"), d.group("root"))
            o = open_.pop(k, None)
            if o is None:
                continue
            if o.binary:
                binary += 1
                continue
            cp = cpv_key(k[0])
            if cp is None or t < o.started:
                continue
            builds.append(Build(cpv=k[0], cp=cp, root=k[1], started=o.started, finished=t))
        elif msg.startswith(_SESSION_END) or msg.startswith(_SESSION_START):
            unfinished += len(open_)
            open_.clear()
    unfinished += len(open_)
    return History(builds=tuple(builds), binary=binary, unfinished=unfinished)
