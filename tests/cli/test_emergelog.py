"""The emerge.log parser on a realistic log: --jobs interleaving, failures, binary merges."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from swarmlib import emergelog

LOG = Path(__file__).parent / "data" / "emerge.log"


def parse_text(text: str) -> emergelog.History:
    return emergelog.parse(text.splitlines())


def test_fixture_builds_exactly() -> None:
    with LOG.open() as fh:
        h = emergelog.parse(fh)
    assert [(b.cpv, b.duration_s) for b in h.builds] == [
        ("sys-libs/zlib-1.3.1", 47),
        ("dev-lang/perl-5.40.0", 317),
        ("dev-libs/openssl-3.3.2", 307),
        ("app-misc/hello-2.12", 41),
        ("media-libs/libpng-1.6.44", 53),
        ("dev-libs/openssl-3.3.2", 339),
        ("dev-libs/openssl-3.3.3", 298),
        ("sys-devel/gcc-14.2.1_p20241116", 5400),
    ]
    # zstd and the second hello were binary merges; gcc failed once (--keep-going session),
    # was cut off once (no session end: power loss), and openssl-3.3.3 was interrupted.
    assert h.binary == 2
    assert h.unfinished == 3


def test_fixture_aggregates() -> None:
    h = emergelog.parse(LOG.read_text().splitlines())
    assert h.per_cp() == {
        "sys-libs/zlib": 47.0,
        "dev-lang/perl": 317.0,
        "dev-libs/openssl": 307.0,  # median of 307, 339, 298
        "app-misc/hello": 41.0,
        "media-libs/libpng": 53.0,
        "sys-devel/gcc": 5400.0,
    }
    assert h.per_cpv()["dev-libs/openssl-3.3.2"] == 339  # the most recent of the two
    assert h.longest(3) == [("sys-devel/gcc", 5400.0), ("dev-lang/perl", 317.0),
                            ("dev-libs/openssl", 307.0)]


def test_restart_of_same_cpv_drops_the_first_start() -> None:
    h = parse_text(
        "100:  >>> emerge (1 of 1) dev-libs/foo-1.0 to /\n"
        "150:  >>> emerge (1 of 1) dev-libs/foo-1.0 to /\n"
        "170:  ::: completed emerge (1 of 1) dev-libs/foo-1.0 to /\n"
    )
    assert [(b.cpv, b.duration_s) for b in h.builds] == [("dev-libs/foo-1.0", 20)]
    assert h.unfinished == 1


def test_exiting_unsuccessfully_drops_open_builds_but_keeps_finished() -> None:
    h = parse_text(
        "100:  >>> emerge (1 of 2) dev-libs/foo-1.0 to /\n"
        "101:  >>> emerge (2 of 2) dev-libs/bar-2.0 to /\n"
        "130:  ::: completed emerge (2 of 2) dev-libs/bar-2.0 to /\n"
        "140:  *** exiting unsuccessfully with status '1'.\n"
        # a stray completion after the session ended must not pair with the dropped start
        "150:  ::: completed emerge (1 of 2) dev-libs/foo-1.0 to /\n"
    )
    assert [(b.cpv, b.duration_s) for b in h.builds] == [("dev-libs/bar-2.0", 29)]
    assert h.unfinished == 1


def test_roots_are_paired_separately() -> None:
    h = parse_text(
        "100:  >>> emerge (1 of 2) dev-libs/foo-1.0 to /\n"
        "110:  >>> emerge (2 of 2) dev-libs/foo-1.0 to /mnt/chroot/\n"
        "120:  ::: completed emerge (2 of 2) dev-libs/foo-1.0 to /mnt/chroot/\n"
        "200:  ::: completed emerge (1 of 2) dev-libs/foo-1.0 to /\n"
    )
    assert [(b.root, b.duration_s) for b in h.builds] == [("/mnt/chroot/", 10), ("/", 100)]


def test_median_uses_the_last_five_builds() -> None:
    lines = []
    for i, d in enumerate([1000, 1000, 10, 20, 30, 40, 50]):
        t = 10_000 * (i + 1)
        lines += [f"{t}:  >>> emerge (1 of 1) dev-libs/foo-1.{i} to /",
                  f"{t + d}:  ::: completed emerge (1 of 1) dev-libs/foo-1.{i} to /"]
    assert emergelog.parse(lines).per_cp() == {"dev-libs/foo": 30.0}


def test_garbage_and_non_cpv_lines_are_ignored() -> None:
    h = parse_text(
        "not a log line\n"
        "abc:  >>> emerge (1 of 1) dev-libs/foo-1.0 to /\n"
        "100:  >>> emerge (1 of 1) foo to /\n"
        "110:  ::: completed emerge (1 of 1) foo to /\n"
        "\n"
    )
    assert h.builds == ()


def test_parser_is_pure() -> None:
    code = ("import sys, swarmlib.emergelog as m; "
            "m.parse(['1:  >>> emerge (1 of 1) a/b-1 to /', '2:  ::: completed emerge (1 of 1) a/b-1 to /']); "
            "bad = [x for x in ('trio', 'httpx') if x in sys.modules]; print(bad); "
            "sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={"PORTAGE_OVERRIDE_EPREFIX": "/", "PATH": "/usr/bin:/bin"},
                          check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
