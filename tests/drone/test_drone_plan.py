"""Pure parts of "build exactly one package": the plan check and the USE comparison."""

from __future__ import annotations

import pytest

from droned import plan
from droned.portage_probe import use_mismatch

HEAD = """
These are the packages that would be merged, in order:

Calculating dependencies ... done!
Dependency resolution took 0.01 s (backtrack: 0/20).

"""

ONLY_THE_PACKAGE = HEAD + '[ebuild  N     ] swarm-demo/hello-1.0  USE="-shout" \n'

DEPENDENCY_FROM_SOURCE = HEAD + """[ebuild  N     ] swarm-demo/buildtool-1.0
[ebuild  N     ] swarm-demo/hello-1.0  USE="-shout"
"""

BINARY_DEPENDENCIES = HEAD + """Fetching binary packages info...
[binary   R    ] swarm-demo/libgreet-1.0-3::swarm-demo  USE="unicode" 0 KiB
[binary  N     ] swarm-demo/buildtool-1.0-1
[ebuild   R    ] swarm-demo/hello-1.0:0::swarm-demo  USE="-shout" 0 KiB

Total: 3 packages (1 new, 2 reinstalls, 2 binaries), Size of downloads: 0 KiB
"""

TREE = HEAD + """[nomerge       ] sys-apps/portage-3.0.83
[ebuild     U  ]  dev-libs/foo-1.2-r1 [1.1]
"""

ONLY_A_BINARY = HEAD + '[binary   R    ] swarm-demo/libgreet-1.0-1  USE="unicode"\n'

NO_EBUILDS = """!!! binrepos.conf is missing (or PORTAGE_BINHOST is unset), but use is requested.

emerge: there are no ebuilds to satisfy "=swarm-demo/nope-1.0".

emerge: searching for similar names...
emerge: Maybe you meant any of these: swarm-demo/hello, swarm-demo/libgreet?
"""

HARD_BLOCKER = HEAD + """[ebuild  N     ] dev-libs/new-1
[blocks B      ] dev-libs/old ("dev-libs/new-1" is blocking dev-libs/old-1)
"""


def test_only_the_package_is_fine() -> None:
    assert plan.check_plan(ONLY_THE_PACKAGE, "swarm-demo/hello-1.0") is None


def test_another_ebuild_row_is_refused_and_named() -> None:
    why = plan.check_plan(DEPENDENCY_FROM_SOURCE, "swarm-demo/hello-1.0")
    assert why == "would compile swarm-demo/buildtool-1.0 from source"


def test_binary_rows_slots_and_repos_are_fine() -> None:
    assert plan.check_plan(BINARY_DEPENDENCIES, "swarm-demo/hello-1.0") is None
    rows = plan.parse_rows(BINARY_DEPENDENCIES)
    assert [(r.kind, r.cpv) for r in rows] == [
        ("binary", "swarm-demo/libgreet-1.0-3"),
        ("binary", "swarm-demo/buildtool-1.0-1"),
        ("ebuild", "swarm-demo/hello-1.0"),
    ]


def test_tree_rows_and_revisions() -> None:
    assert plan.check_plan(TREE, "dev-libs/foo-1.2-r1") is None
    # foo-1.2 is not foo-1.2-r1: that row is another build.
    assert plan.check_plan(TREE, "dev-libs/foo-1.2") == (
        "would compile dev-libs/foo-1.2-r1 from source")
    assert plan.check_plan(ONLY_THE_PACKAGE, "swarm-demo/hello-1.0-r0") is None


def test_no_row_for_the_package() -> None:
    why = plan.check_plan(HEAD, "swarm-demo/hello-1.0")
    assert why is not None
    assert why.startswith("no row for swarm-demo/hello-1.0")
    why = plan.check_plan(ONLY_A_BINARY, "swarm-demo/libgreet-1.0")
    assert why is not None
    assert "as a binary package" in why


def test_failing_emerge_gives_its_last_lines() -> None:
    why = plan.check_plan(NO_EBUILDS, "swarm-demo/nope-1.0", returncode=1)
    assert why is not None
    assert why.startswith("emerge --pretend failed with exit code 1")
    assert 'there are no ebuilds to satisfy "=swarm-demo/nope-1.0"' in why


def test_hard_blocker_is_refused() -> None:
    why = plan.check_plan(HARD_BLOCKER, "dev-libs/new-1")
    assert why is not None
    assert why.startswith("blocked: [blocks B")


def test_plan_argv_and_emerge_detection() -> None:
    argv = ["emerge", "--oneshot", "--usepkg-exclude=a/b", "=a/b-1"]
    assert plan.plan_argv(argv) == [*argv, "--pretend", "--color=n"]
    assert plan.is_emerge(["/usr/bin/emerge", "x"])
    assert not plan.is_emerge(["python", "-m", "droned.fake_emerge"])
    assert not plan.is_emerge([])


@pytest.mark.parametrize(
    ("built", "iuse", "asked", "expected"),
    [
        # Implicit and arch flags in the binary's USE never count.
        (["amd64", "elibc_glibc", "unicode"], ["+unicode", "ssl"], ["unicode"], None),
        (["unicode"], ["+unicode"], None, None),  # the lease did not say
        # Flags outside IUSE in the lease (profile noise, other packages' flags) do not count.
        (["ssl"], ["ssl", "-debug"], ["ssl", "gtk"], None),
        (["python_targets_python3_12"], ["python_targets_python3_12",
                                         "python_targets_python3_13"],
         ["python_targets_python3_12"], None),
        (["unicode"], ["+unicode"], [],
         "use_mismatch: built with [unicode], lease asked []"),
        (["a", "b"], ["a", "b", "c"], ["a", "c"],
         "use_mismatch: built with [a b], lease asked [a c]"),
    ],
)
def test_use_comparison(built: list[str], iuse: list[str], asked: list[str] | None,
                        expected: str | None) -> None:
    assert use_mismatch(built, iuse, asked) == expected


def test_hidden_use_expand_flags_never_count() -> None:
    """emerge -pv hides USE_EXPAND_HIDDEN groups (ELIBC, KERNEL): a package with elibc_glibc in
    IUSE, enabled on the drone, is not a mismatch with a lease that cannot name it."""
    built, iuse = ["elibc_glibc", "kernel_linux", "ssl"], ["elibc_glibc", "elibc_musl",
                                                           "kernel_linux", "ssl"]
    assert use_mismatch(built, iuse, ["ssl"], ["ELIBC", "KERNEL"]) is None
    assert use_mismatch(built, iuse, ["ssl"]) is not None  # without knowing they are hidden
    assert use_mismatch(built, iuse, [], ["ELIBC", "KERNEL"]) == (
        "use_mismatch: built with [ssl], lease asked []")


def test_plan_parser_does_not_import_trio() -> None:
    import subprocess
    import sys

    code = ("import sys, droned.plan, droned.portage_probe; "
            "assert 'trio' not in sys.modules and 'portage.dbapi' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)
