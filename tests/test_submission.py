"""The submission parser: real-format emerge --pretend output of every kind, JSON, ordering."""

from __future__ import annotations

import functools
import graphlib
from pathlib import Path

import attrs
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd import atoms, submission
from swarmd.submission import Submission, order_graph, parse_json, parse_text
from swarmlib.errors import BadRequest, BadSubmission

DATA = Path(__file__).parent / "data"

# The jobs of world-plain/-verbose/-quiet.txt, in emerge's (merge) order. The [binary] rows
# (gmp-6.3.0-r1-2, zstd-1.5.6-1) are already on a binhost: not jobs (SPEC section 12); their
# build ids are not part of the CPV.
WORLD = [
    "sys-libs/zlib-1.3.1-r1",
    "dev-libs/mpc-1.3.1",
    "sys-devel/gcc-14.2.1_p20241116",
    "dev-libs/libsodium-1.0.20",
    "app-editors/vim-core-9.1.0866",
    "app-editors/vim-9.1.0866",
    "dev-python/setuptools-75.6.0",
    "media-libs/libpng-1.6.43",
]


def read(name: str) -> str:
    return (DATA / name).read_text()


def is_acyclic(sub: Submission) -> bool:
    ts = graphlib.TopologicalSorter({p: sub.deps.get(p, []) for p in sub.packages})
    try:
        ts.prepare()
    except graphlib.CycleError:
        return False
    return True


# ------------------------------------------------------------------ emerge output kinds


@pytest.mark.parametrize("name", ["world-plain.txt", "world-verbose.txt", "world-quiet.txt"])
def test_plain_outputs_give_every_job_in_order_and_no_edges(name: str) -> None:
    sub = parse_text(read(name))
    assert sub.packages == WORLD
    assert sub.deps == {}  # plain output gives the serial order only
    assert not sub.tree
    assert sub.cycles == []
    assert sub.binary == ["dev-libs/gmp-6.3.0-r1", "app-arch/zstd-1.5.6"]


def test_verbose_and_plain_agree_but_for_use() -> None:
    verbose, plain = parse_text(read("world-verbose.txt")), parse_text(read("world-plain.txt"))
    assert plain.use == {}  # no -v: USE unknown, nothing to check
    assert set(verbose.use) == set(WORLD)
    assert attrs.evolve(verbose, use={}) == plain


def test_tree_output_gives_dependency_edges_and_ignores_nomerge_blocks_uninstall() -> None:
    sub = parse_text(read("world-tree.txt"))
    assert sub.tree
    assert sub.packages == [
        "app-editors/vim-9.1.0866",
        "app-editors/vim-core-9.1.0866",
        "dev-libs/libsodium-1.0.20",
        "sys-devel/gcc-14.2.1_p20241116",  # the [ebuild NS] row, not the [nomerge] one
        "dev-libs/mpc-1.3.1",
        "sys-libs/zlib-1.3.1-r1",
    ]
    # mpc's dependency gmp is a [binary] row (build id 2): on a binhost, so satisfied
    assert sub.deps == {
        "app-editors/vim-9.1.0866": ["app-editors/vim-core-9.1.0866",
                                     "dev-libs/libsodium-1.0.20"],
        "sys-devel/gcc-14.2.1_p20241116": ["dev-libs/mpc-1.3.1", "sys-libs/zlib-1.3.1-r1"],
    }
    assert sub.binary == ["dev-libs/gmp-6.3.0-r1"]
    assert "sys-apps/util-linux-2.38.1-r2" not in sub.packages  # the [uninstall] row


def test_tree_nomerge_parent_and_repeated_package() -> None:
    sub = parse_text(read("desktop-tree.txt"))
    assert sub.tree
    assert sub.packages == [
        "kde-plasma/plasma-meta-6.2.4",
        "dev-libs/wayland-1.23.1",  # first seen under the [nomerge] kwin: no edge from there
        "media-libs/mesa-24.2.7",
        "x11-libs/libdrm-2.4.123",
        "dev-util/glslang-1.3.296",  # below [blocks]/[uninstall] rows: no parent job
        "app-misc/screen-5.0.0",
    ]
    assert sub.deps == {
        "kde-plasma/plasma-meta-6.2.4": ["media-libs/mesa-24.2.7"],
        "media-libs/mesa-24.2.7": ["x11-libs/libdrm-2.4.123", "dev-libs/wayland-1.23.1"],
    }
    # a job is listed once however often it appears
    assert len(sub.packages) == len(set(sub.packages))


def test_color_output_is_parsed_like_plain() -> None:
    text = read("world-color.txt")
    assert "\x1b[" in text
    sub = parse_text(text)
    assert sub.packages == [
        "sys-libs/zlib-1.3.1-r1",
        "dev-libs/libsodium-1.0.20",
        "app-arch/zstd-1.5.6",
    ]
    assert sub.tree
    # libsodium hangs under the [binary] gmp row, which has no job above it: no parent
    assert sub.deps == {
        "dev-libs/libsodium-1.0.20": ["app-arch/zstd-1.5.6"],
    }
    assert sub.use == {"sys-libs/zlib-1.3.1-r1": ["minizip"], "dev-libs/libsodium-1.0.20": ["asm"]}


def test_color_verbose_equals_uncolored() -> None:
    """Colouring every row of the verbose fixture changes nothing."""
    e = "\x1b["
    colored = []
    for line in read("world-verbose.txt").split("\n"):
        if line.startswith("[ebuild"):
            line = line.replace("[ebuild", f"[{e}32;01mebuild{e}0m", 1)
        elif line.startswith("[binary"):
            line = line.replace("[binary", f"[{e}35;01mbinary{e}0m", 1)
        line = line.replace("::gentoo", f"::{e}0;33mgentoo{e}0m").replace('USE="',
                                                                          f'{e}34;01mUSE={e}0m"')
        colored.append(line)
    assert parse_text("\n".join(colored)) == parse_text(read("world-verbose.txt"))


def test_crlf_line_endings() -> None:
    assert parse_text(read("world-verbose.txt").replace("\n", "\r\n")).packages == WORLD


@pytest.mark.parametrize(
    ("token", "binary", "cpv"),
    [
        ("app-arch/zstd-1.5.6-1", True, "app-arch/zstd-1.5.6"),
        ("dev-libs/gmp-6.3.0-r1-2", True, "dev-libs/gmp-6.3.0-r1"),
        ("dev-libs/gmp-6.3.0-r1-2:0/10.5::gentoo", True, "dev-libs/gmp-6.3.0-r1"),
        ("dev-libs/gmp-6.3.0-r1", True, "dev-libs/gmp-6.3.0-r1"),  # binary without build id
        ("app-misc/foo-bar-2-1", True, "app-misc/foo-bar-2"),
        ("dev-libs/libsodium-1.0.20:0/26::gentoo", False, "dev-libs/libsodium-1.0.20"),
        ("sys-devel/gcc-14.2.1_p20241116:14", False, "sys-devel/gcc-14.2.1_p20241116"),
        ("dev-libs/foo-1.0::my-overlay", False, "dev-libs/foo-1.0"),
        ("dev-libs/foo-1.0-r0", False, "dev-libs/foo-1.0"),
        ("app-editors/vim-9999", False, "app-editors/vim-9999"),
    ],
)
def test_job_tokens(token: str, binary: bool, cpv: str) -> None:
    assert atoms.parse_job_cpv(token, binary=binary) == cpv


def test_build_id_is_only_stripped_from_binary_rows() -> None:
    # An [ebuild] row never has a build id: "zstd-1.5.6-1" is then not a valid CPV at all.
    with pytest.raises(ValueError, match="zstd-1.5.6-1"):
        atoms.parse_job_cpv("app-arch/zstd-1.5.6-1", binary=False)
    sub = parse_text("[binary   R    ] app-arch/zstd-1.5.6-1::gentoo  USE=\"lz4\" 0 KiB\n")
    assert sub.binary == ["app-arch/zstd-1.5.6"]
    # nothing but [binary] rows: everything is on a binhost already, nothing to queue
    assert (sub.packages, sub.deps, sub.use) == ([], {}, {})


def test_slot_subslot_repo_forms_are_the_same_job() -> None:
    body = "\n".join([
        "[ebuild   R    ] dev-libs/libsodium-1.0.20:0/26::gentoo  USE=\"asm\" 0 KiB",
        "[ebuild   R    ] dev-libs/libsodium-1.0.20",
        "[ebuild   R    ] dev-libs/libsodium-1.0.20:0/26",
        "[ebuild   R    ] dev-libs/libsodium-1.0.20::gentoo",
    ])
    assert parse_text(body).packages == ["dev-libs/libsodium-1.0.20"]


@pytest.mark.parametrize(
    "body",
    [
        "",
        "\n\n\n",
        "Calculating dependencies... done!\nDependency resolution took 0.31 s.\n",
        "Total: 0 packages, Size of downloads: 0 KiB\n",
        "[nomerge       ] sys-devel/gcc-14.2.1_p20241116:14::gentoo\n",
        "[blocks B      ] <sys-apps/util-linux-2.39\n[uninstall     ] sys-apps/util-linux-2.38\n",
        "Conflict: 1 block (all satisfied)\n",
    ],
)
def test_no_package_rows_is_bad_request_not_bad_submission(body: str) -> None:
    with pytest.raises(BadRequest, match="no package rows") as info:
        parse_text(body)
    assert not isinstance(info.value, BadSubmission)


def test_non_job_lines_are_never_errors() -> None:
    body = read("world-verbose.txt") + "\n".join([
        "",
        "Would you like to merge these packages? [Yes/No]",
        "!!! The following installed packages are masked:",
        "[ebuild  N    ] dev-libs/ok-1",
        "  (dev-libs/gmp-6.3.0-r1:0/10.5::gentoo, binary scheduled for merge) causes rebuilds for:",
        "",
    ])
    assert parse_text(body).packages == [*WORLD, "dev-libs/ok-1"]


# ------------------------------------------------------------------ bad lines


def test_every_bad_line_is_named_with_its_number_counting_blank_lines() -> None:
    lines = [
        "",  # 1
        "These are the packages that would be merged, in order:",  # 2
        "",  # 3
        "[ebuild  N    ] dev-libs/good-1.0",  # 4
        "[ebuild  N    ] foo",  # 5
        "",  # 6
        "",  # 7
        "[ebuild  N    ] dev-libs/foo-",  # 8
        "[binary   R   ] dev-libs/bar",  # 9
        "[ebuild  N    ]",  # 10
        "[ebuild  N    ] dev-libs/also-good-2::gentoo",  # 11
        "Total: 5 packages",  # 12
    ]
    with pytest.raises(BadSubmission) as info:
        parse_text("\n".join(lines) + "\n")
    bad = info.value.lines
    assert [n for n, _text, _why in bad] == [5, 8, 9, 10]
    assert [text for _n, text, _why in bad] == [lines[4], lines[7], lines[8], lines[9]]
    assert "'foo'" in bad[0][2]
    assert "'dev-libs/foo-'" in bad[1][2]
    msg = str(info.value)
    for n in (5, 8, 9, 10):
        assert f"line {n}:" in msg
    assert submission.bad_lines_json(info.value)[0] == {"line": 5, "text": lines[4],
                                                       "why": bad[0][2]}


def test_crlf_bad_line_numbers() -> None:
    with pytest.raises(BadSubmission) as info:
        parse_text("\r\n[ebuild  N    ] dev-libs/ok-1\r\n\r\n[ebuild  N    ] foo\r\n")
    assert [n for n, _t, _w in info.value.lines] == [4]


def test_one_bad_line_rejects_a_big_submission() -> None:
    good = [f"[ebuild  N    ] dev-libs/p{i}-1.{i}" for i in range(2000)]
    good[1234] = "[ebuild  N    ] dev-libs/p1234-"
    with pytest.raises(BadSubmission) as info:
        parse_text("\n".join(good))
    assert [n for n, _t, _w in info.value.lines] == [1235]


# ------------------------------------------------------------------ JSON


def test_json_packages_deps_priority_request_id() -> None:
    sub, prio, rid = parse_json({
        "packages": ["=dev-libs/b-2", "=dev-libs/a-1.0-r0", "dev-libs/c-3", "=dev-libs/a-1.0"],
        "deps": {"=dev-libs/b-2": ["=dev-libs/a-1.0", "=dev-libs/outside-9"],
                 "=dev-libs/c-3": ["=dev-libs/b-2", "=dev-libs/c-3"]},
        "priority": 5,
        "request_id": "client-42.a:b_c",
    })
    assert sub.packages == ["dev-libs/b-2", "dev-libs/a-1.0", "dev-libs/c-3"]
    # edges to CPVs outside the submission are satisfied; self edges dropped
    assert sub.deps == {"dev-libs/b-2": ["dev-libs/a-1.0"], "dev-libs/c-3": ["dev-libs/b-2"]}
    assert (prio, rid) == (5, "client-42.a:b_c")
    assert not sub.tree


def test_json_defaults() -> None:
    sub, prio, rid = parse_json({"packages": ["=app-misc/x-1"]})
    assert (sub.packages, sub.deps, prio, rid) == (["app-misc/x-1"], {}, 0, None)


@pytest.mark.parametrize(
    ("doc", "match"),
    [
        ([], "JSON object"),
        ({"packages": []}, "packages"),
        ({"packages": "=a/b-1"}, "packages"),
        ({}, "packages"),
        ({"packages": ["=a/b-1"], "extra": 1}, "unknown field.*extra"),
        ({"packages": ["=a/b-1"], "priority": "high"}, "priority"),
        ({"packages": ["=a/b-1"], "priority": True}, "priority"),
        ({"packages": ["=a/b-1"], "priority": 5000}, "priority"),
        ({"packages": ["=a/b-1"], "request_id": ""}, "request_id"),
        ({"packages": ["=a/b-1"], "request_id": "has space"}, "request_id"),
        ({"packages": ["=a/b-1"], "request_id": "x" * 129}, "request_id"),
        ({"packages": ["=a/b-1"], "request_id": 7}, "request_id"),
        ({"packages": ["=a/b-1"], "deps": ["=a/b-1"]}, "deps"),
    ],
)
def test_json_bad_request(doc: object, match: str) -> None:
    with pytest.raises(BadRequest, match=match):
        parse_json(doc)


def test_json_bad_atoms_are_all_named() -> None:
    doc = {
        "packages": ["=dev-libs/ok-1", ">=dev-libs/range-1", "dev-libs/foo-", "foo", 7,
                     "=dev-libs/star-1*", "=dev-libs/slot-1:0"],
        "deps": {"=dev-libs/ok-1": ["nope"], "bad-key": []},
    }
    with pytest.raises(BadSubmission) as info:
        parse_json(doc)
    texts = [text for _n, text, _why in info.value.lines]
    for atom in (">=dev-libs/range-1", "dev-libs/foo-", "foo", "7", "=dev-libs/star-1*",
                 "=dev-libs/slot-1:0", "nope", "bad-key"):
        assert atom in texts, atom
    numbered = {text: n for n, text, _why in info.value.lines if n}
    assert numbered[">=dev-libs/range-1"] == 2  # 1-based position in "packages"
    assert numbered["=dev-libs/slot-1:0"] == 7
    assert "packages[1]" in str(info.value)


# ------------------------------------------------------------------ versions (portage's rules)


@pytest.mark.parametrize(
    ("lower", "higher"),
    [
        ("1.0-r9", "1.0_p1"),  # a patch release beats any revision
        ("1.0", "1.0-r1"),
        ("1.9", "1.10"),
        ("1.0_rc1", "1.0"),
        ("1.0_alpha", "1.0_beta"),
        ("1.0_beta", "1.0_pre"),
        ("1.0_pre", "1.0_rc"),
        ("1.0", "1.0a"),
        ("1.01", "1.1"),
        ("6.2.1-r5", "6.3.0-r1"),
        ("14.2.1_p20241025", "14.2.1_p20241116"),
    ],
)
def test_vercmp_follows_portage(lower: str, higher: str) -> None:
    assert atoms.vercmp(lower, higher) < 0
    assert atoms.vercmp(higher, lower) > 0
    assert atoms.vercmp(lower, lower) == 0


def test_vercmp_sorts_where_string_order_is_wrong() -> None:
    versions = ["1.0_p1", "1.0", "1.0-r9", "1.0_rc2", "1.10", "1.9", "1.0_alpha1"]
    ordered = sorted(versions, key=functools.cmp_to_key(atoms.vercmp))
    assert ordered == ["1.0_alpha1", "1.0_rc2", "1.0", "1.0-r9", "1.0_p1", "1.9", "1.10"]
    assert ordered != sorted(versions)


def test_vercmp_refuses_garbage() -> None:
    with pytest.raises(ValueError, match="cannot compare"):
        atoms.vercmp("1.0", "not-a-version")


# ------------------------------------------------------------------ cycles


def test_tree_cycle_is_reported_and_broken() -> None:
    body = "\n".join([
        "[ebuild  N    ] dev-libs/a-1",
        "[ebuild  N    ]  dev-libs/b-1",
        "[ebuild  N    ]   dev-libs/a-1",
        "[ebuild  N    ]  dev-libs/c-1",
    ])
    sub = parse_text(body)
    assert sub.packages == ["dev-libs/a-1", "dev-libs/b-1", "dev-libs/c-1"]
    assert len(sub.cycles) == 1
    assert sorted(sub.cycles[0]) == ["dev-libs/a-1", "dev-libs/b-1"]
    # In --tree display order a dependency comes after its dependent: b -> a contradicts it.
    assert sub.deps == {"dev-libs/a-1": ["dev-libs/b-1", "dev-libs/c-1"]}
    assert is_acyclic(sub)


def test_json_cycle_is_broken_at_the_edge_against_merge_order() -> None:
    doc = {
        "packages": ["=x/a-1", "=x/b-1", "=x/c-1", "=x/d-1"],
        "deps": {"=x/d-1": ["=x/c-1"], "=x/c-1": ["=x/b-1"], "=x/b-1": ["=x/a-1"],
                 "=x/a-1": ["=x/c-1"]},
    }
    sub, _, _ = parse_json(doc)
    assert len(sub.cycles) == 1
    assert sorted(sub.cycles[0]) == ["x/a-1", "x/b-1", "x/c-1"]
    # In merge order a dependency comes first: a (0) depending on c (2) is the wrong one.
    assert sub.deps == {"x/b-1": ["x/a-1"], "x/c-1": ["x/b-1"], "x/d-1": ["x/c-1"]}
    assert is_acyclic(sub)
    assert parse_json(doc)[0] == sub  # same input, same result


def test_two_disjoint_cycles_and_a_self_loop() -> None:
    pk = [f"x/p{i}-1" for i in range(6)]
    deps = {pk[0]: [pk[1]], pk[1]: [pk[0]], pk[2]: [pk[3]], pk[3]: [pk[4]], pk[4]: [pk[2]],
            pk[5]: [pk[5]]}
    sub = order_graph(pk, deps, tree=False)
    assert len(sub.cycles) == 3
    assert is_acyclic(sub)
    assert sub == order_graph(pk, deps, tree=False)


@st.composite
def graphs(draw: st.DrawFn) -> tuple[list[str], dict[str, list[str]]]:
    n = draw(st.integers(1, 12))
    pk = [f"cat-{i % 3}/pkg{i}-1.{i}" for i in range(n)]
    edges = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)),
                          max_size=3 * n))
    deps: dict[str, list[str]] = {}
    for a, b in edges:
        if b != a and pk[b] not in deps.setdefault(pk[a], []):
            deps[pk[a]].append(pk[b])
    return pk, deps


@settings(max_examples=200, deadline=None, derandomize=True)
@given(graphs(), st.booleans())
def test_order_graph_always_terminates_acyclic_and_deterministic(
    g: tuple[list[str], dict[str, list[str]]], tree: bool
) -> None:
    pk, deps = g
    sub = order_graph(pk, deps, tree=tree)
    assert is_acyclic(sub)
    assert sub.packages == pk
    # only edges of the input remain, and only cycle edges were dropped
    for p, ds in sub.deps.items():
        assert set(ds) <= set(deps.get(p, []))
    original_acyclic = is_acyclic(Submission(packages=pk, deps=deps))
    assert (sub.cycles == []) == original_acyclic
    if original_acyclic:
        assert sub.deps == {p: ds for p, ds in deps.items() if ds}
    for cyc in sub.cycles:
        assert set(cyc) <= set(pk)
    # determinism: the same graph built again (fresh lists) gives the same answer
    again = order_graph(list(pk), {k: list(v) for k, v in deps.items()}, tree=tree)
    assert again == sub


@st.composite
def trees(draw: st.DrawFn) -> list[tuple[int, int]]:
    """An emerge --tree listing: (depth, package index) rows, depth grows by at most 1."""
    rows = [(0, draw(st.integers(0, 9)))]
    for _ in range(draw(st.integers(0, 25))):
        depth = draw(st.integers(0, rows[-1][0] + 1))
        rows.append((depth, draw(st.integers(0, 9))))
    return rows


@settings(max_examples=200, deadline=None, derandomize=True)
@given(trees())
def test_tree_indentation_edges(rows: list[tuple[int, int]]) -> None:
    name = [f"dev-libs/lib{i}-{i}.0" for i in range(10)]
    body = "\n".join(f"[ebuild     U  ] {' ' * depth}{name[i]}::gentoo [0.1] 0 KiB"
                     for depth, i in rows)
    sub = parse_text(body)
    # expected edges: each row depends-of its nearest shallower row above
    expected: dict[str, list[str]] = {}
    for k, (depth, i) in enumerate(rows):
        for pd, pi in reversed(rows[:k]):
            if pd < depth:
                if pi != i and name[i] not in expected.setdefault(name[pi], []):
                    expected[name[pi]].append(name[i])
                break
    if len({d for d, _ in rows}) == 1:
        expected = {}
    order = list(dict.fromkeys(name[i] for _, i in rows))
    assert sub.packages == order
    ref = order_graph(order, expected, tree=len({d for d, _ in rows}) > 1)
    assert sub == ref
    assert is_acyclic(sub)


# ------------------------------------------------------------------ USE of -v rows (SPEC 12)


def test_use_flags_of_a_verbose_row_with_use_expand_and_decorations() -> None:
    sub = parse_text('[ebuild  N     ] dev-libs/foo-1.0::gentoo  USE="bar -baz (-qux) zot%* '
                     '(forced) new% -gone% (-masked%) changed*" '
                     'PYTHON_TARGETS="python3_12 -python3_11" 0 KiB\n')
    assert sub.use == {"dev-libs/foo-1.0": [
        "bar", "changed", "forced", "new", "python_targets_python3_12", "zot"]}


def test_use_of_the_verbose_fixture() -> None:
    use = parse_text(read("world-verbose.txt")).use
    assert use["sys-libs/zlib-1.3.1-r1"] == ["abi_x86_64", "minizip"]  # ABI_X86="(64) -32 (-x32)"
    assert use["sys-devel/gcc-14.2.1_p20241116"] == [
        "cxx", "fortran", "multilib", "nls", "openmp", "pie", "sanitize", "ssp"]  # (-hardened%)
    assert use["dev-libs/libsodium-1.0.20"] == [
        "asm", "cpu_flags_x86_aes", "cpu_flags_x86_sse4_1", "urandom"]
    assert use["app-editors/vim-9.1.0866"] == [
        "acl", "crypt", "nls", "python_single_target_python3_12"]
    assert use["dev-python/setuptools-75.6.0"] == [
        "python_targets_pypy3", "python_targets_python3_12"]
    assert use["dev-libs/mpc-1.3.1"] == []  # USE="-static-libs": known, nothing enabled
    assert "dev-libs/gmp-6.3.0-r1" not in use  # a [binary] row is no job


def test_use_flags_inside_use_of_the_desktop_tree() -> None:
    use = parse_text(read("desktop-tree.txt")).use
    assert "video_cards_amdgpu" in use["x11-libs/libdrm-2.4.123"]
    assert "video_cards_intel" not in use["x11-libs/libdrm-2.4.123"]
    mesa = set(use["media-libs/mesa-24.2.7"])
    assert {"X", "llvm", "video_cards_amdgpu", "video_cards_radeonsi", "abi_x86_64"} <= mesa
    assert not {"x", "debug", "video_cards_intel", "abi_x86_32"} & mesa  # case kept; - is off
    assert "dev-util/glslang-1.3.296" not in use  # its row has no USE group


def test_a_row_without_use_group_has_no_key_and_a_repeat_keeps_the_first() -> None:
    body = "\n".join([
        '[ebuild  N     ] dev-libs/a-1::gentoo 0 KiB',
        '[ebuild  N     ] dev-libs/b-1::gentoo  USE="x -y" 0 KiB',
        '[ebuild  N     ] dev-libs/b-1::gentoo  USE="y" 0 KiB',
        '[ebuild  N     ] dev-libs/a-1::gentoo  ABI_X86="(64)" 0 KiB',
        '[ebuild  N     ] dev-libs/c-1::gentoo  USE="ok b@d+ 9lives x.y -" 0 KiB',
    ])
    sub = parse_text(body)
    assert sub.use == {"dev-libs/b-1": ["x"], "dev-libs/a-1": ["abi_x86_64"],
                       "dev-libs/c-1": ["9lives", "b@d+", "ok", "x.y"]}
    assert [n for n in parse_text(read("world-plain.txt")).use] == []


def test_color_use_equals_uncolored_use() -> None:
    e = "\x1b["
    row = (f'[{e}32;01mebuild{e}0m  N     ] dev-libs/foo-1.0::gentoo  '
           f'USE="{e}31;01mbar{e}0m {e}34;01m-baz{e}0m {e}33;01mzot%*{e}0m" 0 KiB')
    assert parse_text(row).use == {"dev-libs/foo-1.0": ["bar", "zot"]}


# ------------------------------------------------------------------ [binary] rows (SPEC 12)


def test_binary_rows_are_not_queued_and_tree_edges_skip_them() -> None:
    body = "\n".join([
        "[ebuild  N     ] app-misc/top-1",            # job
        "[binary  N     ]  dev-libs/bin-2-1",         # on the binhost: satisfied
        "[ebuild  N     ]   dev-libs/under-3",        # needed by bin, so by top
        "[ebuild  N     ]    dev-libs/deeper-4",      # under under
        "[binary  N     ]   dev-libs/bin2-5-1",       # a binary under a binary
        "[ebuild  N     ]    dev-libs/under2-6",      # still hangs under top
        "[ebuild  N     ]  dev-libs/sibling-7",       # top's own dependency
        "[binary  N     ] app-misc/rootbin-8-3",      # a binary at the top
        "[ebuild  N     ]  dev-libs/orphan-9",        # no job above it: no edge
        "[nomerge       ] app-misc/installed-10",
        "[binary  N     ]  dev-libs/bin3-11-1",
        "[ebuild  N     ]   dev-libs/below-nomerge-12",  # under a [nomerge]: no edge
    ])
    sub = parse_text(body)
    assert sub.packages == ["app-misc/top-1", "dev-libs/under-3", "dev-libs/deeper-4",
                            "dev-libs/under2-6", "dev-libs/sibling-7", "dev-libs/orphan-9",
                            "dev-libs/below-nomerge-12"]
    assert sub.deps == {
        "app-misc/top-1": ["dev-libs/under-3", "dev-libs/under2-6", "dev-libs/sibling-7"],
        "dev-libs/under-3": ["dev-libs/deeper-4"],
    }
    assert sub.binary == ["dev-libs/bin-2", "dev-libs/bin2-5", "app-misc/rootbin-8",
                          "dev-libs/bin3-11"]
    assert sub.tree


def test_a_package_both_binary_and_ebuild_is_a_job() -> None:
    sub = parse_text("[binary  N     ] dev-libs/x-1-2\n[ebuild  N     ] dev-libs/x-1\n")
    assert (sub.packages, sub.binary) == (["dev-libs/x-1"], [])


def test_bad_binary_row_is_still_a_bad_line() -> None:
    with pytest.raises(BadSubmission) as info:
        parse_text("[ebuild  N     ] dev-libs/ok-1\n[binary  N     ] dev-libs/bad-\n")
    assert [n for n, _t, _w in info.value.lines] == [2]


# ------------------------------------------------------------------ JSON use and target


TARGET = {"arch": "amd64", "chost": "x86_64-pc-linux-gnu", "cflags": "-O2  -pipe",
          "cxxflags": "-O2 -pipe", "ldflags": "", "profile": "default/linux/amd64/23.0",
          "accept_keywords": "~amd64 amd64", "binpkg_format": "gpkg",
          "repos": {"gentoo": "git:abc"}}


def test_json_use_is_kept_per_cpv_sorted() -> None:
    sub, _, _ = parse_json({"packages": ["=dev-libs/a-1", "=dev-libs/b-2"],
                            "use": {"=dev-libs/a-1": ["zed", "abc", "python_targets_python3_12",
                                                      "abc"]}})
    assert sub.use == {"dev-libs/a-1": ["abc", "python_targets_python3_12", "zed"]}


@pytest.mark.parametrize(
    ("use", "match"),
    [
        ({"=dev-libs/other-1": ["x"]}, "not one of the packages"),
        ({"=dev-libs/a-1": "x"}, "expected a list"),
        ({"=dev-libs/a-1": ["-x"]}, "'-x' is not a USE flag"),
        ({"=dev-libs/a-1": [7]}, "7 is not a USE flag"),
        ({"nonsense": ["x"]}, "use key"),
    ],
)
def test_json_bad_use_is_named(use: object, match: str) -> None:
    with pytest.raises(BadSubmission, match=match):
        parse_json({"packages": ["=dev-libs/a-1"], "use": use})


def test_json_use_must_be_an_object() -> None:
    with pytest.raises(BadRequest, match="body.use"):
        parse_json({"packages": ["=dev-libs/a-1"], "use": ["x"]})


def test_json_target_is_normalized_and_optional() -> None:
    doc = {"packages": ["=dev-libs/a-1"], "target": TARGET}
    parse_json(doc)  # accepted
    t = submission.json_target(doc)
    assert t is not None
    assert t["cflags"] == "-O2 -pipe"
    assert t["accept_keywords"] == "amd64 ~amd64"
    assert submission.json_target({"packages": ["=dev-libs/a-1"]}) is None


@pytest.mark.parametrize(
    ("target", "match"),
    [
        ({**TARGET, "cflags": 3}, r"body\.target\.cflags"),
        ({**TARGET, "colour": "blue"}, r"body\.target: unknown field.*colour"),
        ("amd64", r"body\.target: expected a JSON object"),
        ({**TARGET, "repos": ["gentoo"]}, r"body\.target\.repos"),
    ],
)
def test_json_bad_target_is_a_400_naming_the_field(target: object, match: str) -> None:
    with pytest.raises(BadRequest, match=match) as info:
        parse_json({"packages": ["=dev-libs/a-1"], "target": target})
    assert not isinstance(info.value, BadSubmission)


def test_header_target() -> None:
    import json

    t = submission.header_target(json.dumps(TARGET, separators=(",", ":")))
    assert t is not None
    assert t["profile"] == "default/linux/amd64/23.0"
    assert submission.header_target(None) is None
    assert submission.header_target("  ") is None
    with pytest.raises(BadRequest, match="X-Swarm-Target: expected the target as JSON"):
        submission.header_target("{nope")
    with pytest.raises(BadRequest, match=r"X-Swarm-Target: target\.arch"):
        submission.header_target(json.dumps({**TARGET, "arch": ["amd64"]}))
