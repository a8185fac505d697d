"""Generate the scheduling workloads in ``bench/workloads/`` (SPEC section 11).

Deterministic: every workload comes from its own seeded ``random.Random``, so running
``python -m bench.make_workloads`` again rewrites byte-identical files. The JSON is committed;
this script is how it was made and how to make it again after changing a parameter.

- ``world-1500.json``: a Gentoo-like world of about 1,500 packages. A toolchain and core
  libraries at the bottom, layers of libraries above, applications on top, and a few very long
  builds (gcc, llvm, clang, rust, nodejs, webkit-gtk, firefox, libreoffice, qtwebengine,
  chromium) wired the way they are in Gentoo.
- ``deep-chains.json``: chain-heavy. Long dependency chains (think dev-haskell, dev-ocaml, a
  perl module stack; five of them 30-170 links deep, sixteen short ones) with cross links
  between chains, on top of a small base. The critical path on the fastest drone is longer
  than the total work spread over all cores: the longest chain must own a fast drone.
- ``flat.json``: many independent packages, a handful of them long, a few depending on one of
  a small set of base libraries.

All three use the same eight drones of 4, 8, 16 and 32 cores, listed in a mixed order so the
simulator's ask order is not sorted by size.
"""

from __future__ import annotations

import json
import math
import random
import sys
from pathlib import Path
from typing import Any

OUT = Path(__file__).resolve().parent / "workloads"

DRONES: list[dict[str, Any]] = [
    {"name": "tiny-a", "cores": 4},
    {"name": "mid-a", "cores": 16},
    {"name": "small-a", "cores": 8},
    {"name": "big-a", "cores": 32},
    {"name": "tiny-b", "cores": 4},
    {"name": "small-b", "cores": 8},
    {"name": "big-b", "cores": 32},
    {"name": "mid-b", "cores": 16},
]

CATEGORIES = [
    "dev-libs", "dev-python", "dev-perl", "x11-libs", "media-libs", "app-misc", "net-libs",
    "sys-apps", "dev-util", "app-text", "gnome-base", "kde-frameworks", "media-video",
    "net-misc", "x11-misc", "app-arch", "dev-ruby", "media-sound", "app-editors", "x11-apps",
    "dev-cpp", "sci-libs", "app-crypt", "sys-process", "gui-libs", "media-gfx", "dev-lua",
]
SYLLABLES = [
    "ba", "lo", "zor", "quin", "fex", "mar", "tul", "pix", "gra", "nel", "vo", "dri", "sen",
    "kal", "rum", "tep", "wix", "ost", "yel", "cor", "fin", "dal", "sho", "mib", "tra", "ux",
    "gel", "pod", "ark", "lin", "sta", "ver", "bor", "neo", "jem", "cru",
]


class Namer:
    """Unique, valid, Gentoo-looking CPVs (one version per ``cat/pn``)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.used: set[str] = set()

    def reserve(self, cpv: str) -> str:
        cp = cpv.rsplit("-", 1)[0]
        if cpv.rsplit("-", 1)[1].startswith("r"):
            cp = cpv.rsplit("-", 2)[0]
        self.used.add(cp)
        return cpv

    def new(self, category: str | None = None) -> str:
        rng = self.rng
        while True:
            cat = category or rng.choice(CATEGORIES)
            pn = "".join(rng.choice(SYLLABLES) for _ in range(rng.randint(2, 3)))
            prefix = {"dev-python": "py", "dev-perl": "perl-", "dev-ruby": "rb-"}.get(cat, "")
            if not prefix and rng.random() < 0.25:
                prefix = "lib"
            pn = prefix + pn
            if rng.random() < 0.15:
                pn += "-" + "".join(rng.choice(SYLLABLES) for _ in range(2))
            cp = f"{cat}/{pn}"
            if cp not in self.used:
                self.used.add(cp)
                ver = f"{rng.randint(0, 9)}.{rng.randint(0, 30)}.{rng.randint(0, 12)}"
                if rng.random() < 0.2:
                    ver += f"-r{rng.randint(1, 4)}"
                return f"{cp}-{ver}"


def small_duration(rng: random.Random, median: float = 55.0, lo: float = 10.0,
                   hi: float = 300.0) -> float:
    """Most Gentoo packages: a lognormal around ``median`` seconds on 8 cores, clipped."""
    v = rng.lognormvariate(math.log(median), 0.85)
    return float(round(min(max(v, lo), hi), 1))


def emerge_order(pkgs: dict[str, dict[str, Any]], roots: list[str],
                 rng: random.Random) -> list[str]:
    """A depth-first post-order from the world set, as ``emerge --tree`` lists packages."""
    seen: set[str] = set()
    order: list[str] = []
    for root in roots:
        stack: list[tuple[str, list[str]]] = []
        if root in seen:
            continue
        seen.add(root)
        deps = list(pkgs[root]["deps"])
        rng.shuffle(deps)
        stack.append((root, deps))
        while stack:
            cpv, todo = stack[-1]
            if todo:
                d = todo.pop()
                if d not in seen:
                    seen.add(d)
                    dd = list(pkgs[d]["deps"])
                    rng.shuffle(dd)
                    stack.append((d, dd))
                continue
            stack.pop()
            order.append(cpv)
    assert len(order) == len(pkgs), (len(order), len(pkgs))
    return order


def finish(name: str, description: str, pkgs: dict[str, dict[str, Any]],
           rng: random.Random) -> dict[str, Any]:
    roots = list(pkgs)
    rng.shuffle(roots)
    order = emerge_order(pkgs, roots, rng)
    return {
        "name": name,
        "description": description,
        "drones": [dict(d) for d in DRONES],
        "packages": [
            {"cpv": c, "seconds_on_8_cores": pkgs[c]["s"], "deps": sorted(pkgs[c]["deps"])}
            for c in order
        ],
    }


# ---------------------------------------------------------------------------- world-1500
TOOLCHAIN: list[tuple[str, float, list[str]]] = [
    # (cpv, seconds on 8 cores, deps) - the bottom of every Gentoo system
    ("sys-libs/zlib-1.3.1", 12.0, []),
    ("sys-kernel/linux-headers-6.6", 8.0, []),
    ("sys-libs/glibc-2.39-r6", 420.0, ["sys-kernel/linux-headers-6.6"]),
    ("sys-devel/binutils-2.42-r1", 240.0, ["sys-libs/zlib-1.3.1", "sys-libs/glibc-2.39-r6"]),
    ("sys-devel/gcc-13.3.1_p20240614", 2000.0,
     ["sys-libs/glibc-2.39-r6", "sys-devel/binutils-2.42-r1", "sys-libs/zlib-1.3.1"]),
    ("sys-libs/ncurses-6.4_p20240414", 70.0, ["sys-libs/glibc-2.39-r6"]),
    ("sys-libs/readline-8.2_p10", 25.0, ["sys-libs/ncurses-6.4_p20240414"]),
    ("dev-libs/openssl-3.3.2", 420.0, ["sys-libs/zlib-1.3.1", "sys-libs/glibc-2.39-r6"]),
    ("dev-lang/perl-5.40.0", 260.0, ["sys-libs/zlib-1.3.1", "sys-libs/glibc-2.39-r6"]),
    ("sys-devel/gettext-0.22.5", 210.0, ["sys-libs/ncurses-6.4_p20240414"]),
    ("dev-libs/libffi-3.4.6", 20.0, ["sys-libs/glibc-2.39-r6"]),
    ("dev-libs/expat-2.6.3", 18.0, ["sys-libs/glibc-2.39-r6"]),
    ("dev-libs/libxml2-2.12.9", 90.0, ["sys-libs/zlib-1.3.1", "sys-libs/readline-8.2_p10"]),
    ("dev-lang/python-3.12.4", 380.0,
     ["dev-libs/openssl-3.3.2", "dev-libs/libffi-3.4.6", "dev-libs/expat-2.6.3",
      "sys-libs/readline-8.2_p10", "sys-libs/ncurses-6.4_p20240414"]),
    ("dev-build/cmake-3.29.6", 360.0, ["dev-libs/openssl-3.3.2", "dev-libs/expat-2.6.3"]),
    ("dev-build/ninja-1.12.1", 20.0, ["dev-lang/python-3.12.4"]),
    ("dev-build/meson-1.4.1", 15.0, ["dev-lang/python-3.12.4", "dev-build/ninja-1.12.1"]),
    ("dev-libs/glib-2.80.5", 240.0,
     ["dev-lang/python-3.12.4", "dev-build/meson-1.4.1", "dev-libs/libffi-3.4.6"]),
    ("dev-libs/boost-1.85.0", 640.0, ["dev-lang/python-3.12.4", "sys-libs/zlib-1.3.1"]),
]
BIG: list[tuple[str, float, list[str], int]] = [
    # (cpv, seconds on 8 cores, named deps, how many random library deps to add)
    ("sys-devel/llvm-18.1.8", 2500.0,
     ["sys-devel/gcc-13.3.1_p20240614", "dev-build/cmake-3.29.6", "dev-lang/python-3.12.4",
      "dev-libs/libxml2-2.12.9", "sys-libs/ncurses-6.4_p20240414"], 0),
    ("sys-devel/clang-18.1.8", 1800.0, ["sys-devel/llvm-18.1.8"], 0),
    ("dev-lang/rust-1.80.1", 4200.0,
     ["sys-devel/llvm-18.1.8", "dev-libs/openssl-3.3.2", "dev-build/cmake-3.29.6"], 0),
    ("net-libs/nodejs-22.7.0", 1400.0,
     ["dev-libs/openssl-3.3.2", "dev-lang/python-3.12.4", "dev-build/ninja-1.12.1"], 2),
    ("media-video/ffmpeg-6.1.2", 480.0, ["dev-libs/openssl-3.3.2"], 6),
    ("x11-libs/gtk+-3.24.42", 300.0, ["dev-libs/glib-2.80.5"], 6),
    ("dev-qt/qtbase-6.7.2", 720.0, ["dev-libs/glib-2.80.5", "dev-build/cmake-3.29.6"], 6),
    ("dev-qt/qtdeclarative-6.7.2", 420.0, ["dev-qt/qtbase-6.7.2"], 1),
    ("net-libs/webkit-gtk-2.44.3", 3400.0,
     ["x11-libs/gtk+-3.24.42", "dev-build/cmake-3.29.6", "media-video/ffmpeg-6.1.2"], 6),
    ("www-client/firefox-128.2.0", 5200.0,
     ["dev-lang/rust-1.80.1", "sys-devel/clang-18.1.8", "x11-libs/gtk+-3.24.42",
      "net-libs/nodejs-22.7.0", "media-video/ffmpeg-6.1.2"], 8),
    ("app-office/libreoffice-24.2.5.2", 5600.0,
     ["dev-libs/boost-1.85.0", "x11-libs/gtk+-3.24.42", "dev-qt/qtbase-6.7.2"], 10),
    ("dev-qt/qtwebengine-6.7.2", 7400.0,
     ["dev-qt/qtdeclarative-6.7.2", "net-libs/nodejs-22.7.0", "media-video/ffmpeg-6.1.2"], 6),
    ("www-client/chromium-128.0.6613.84", 9200.0,
     ["sys-devel/clang-18.1.8", "dev-lang/rust-1.80.1", "net-libs/nodejs-22.7.0",
      "x11-libs/gtk+-3.24.42", "media-video/ffmpeg-6.1.2"], 8),
]
WORLD_LAYERS = [270, 310, 290, 250, 210, 140]  # bulk packages per layer above the toolchain


def make_world(seed: int = 1500) -> dict[str, Any]:
    rng = random.Random(seed)
    namer = Namer(rng)
    pkgs: dict[str, dict[str, Any]] = {}
    layer_of: dict[str, int] = {}
    layers: list[list[str]] = [[]]
    popularity: dict[str, float] = {}

    def add(cpv: str, s: float, deps: list[str], layer: int) -> None:
        pkgs[cpv] = {"s": s, "deps": sorted(set(deps))}
        layer_of[cpv] = layer
        while len(layers) <= layer:
            layers.append([])
        layers[layer].append(cpv)
        # Libraries near the bottom are what most things link against.
        popularity[cpv] = rng.paretovariate(1.3) * (2.0 if layer <= 1 else 1.0)

    for cpv, s, deps in TOOLCHAIN:
        namer.reserve(cpv)
        add(cpv, s, deps, 0)
    toolchain_libs = [c for c, _, _ in TOOLCHAIN if "gcc" not in c]

    def pick_deps(layer: int, n: int) -> list[str]:
        out: set[str] = set()
        below = [c for lay in layers[:layer] for c in lay]
        weights = [popularity[c] * (3.0 if layer_of[c] == layer - 1 else 1.0) for c in below]
        for _ in range(n * 3):
            if len(out) >= n:
                break
            if rng.random() < 0.2:
                out.add(rng.choice(toolchain_libs))
            else:
                out.add(rng.choices(below, weights)[0])
        return sorted(out)

    big_layer = {
        "llvm": 2, "clang": 3, "rust": 4, "nodejs": 2, "ffmpeg": 2, "gtk+": 2, "qtbase": 2,
        "qtdeclarative": 3, "webkit-gtk": 4, "firefox": 6, "libreoffice": 6,
        "qtwebengine": 5, "chromium": 6,
    }
    bulk = iter(WORLD_LAYERS)
    for layer in range(1, len(WORLD_LAYERS) + 1):
        for _ in range(next(bulk)):
            s = small_duration(rng)
            if rng.random() < 0.04:
                s = float(round(rng.uniform(300.0, 1200.0), 1))  # a big library or tool
            n = min(1 + int(rng.expovariate(0.45)), 9)
            if layer == 1 and rng.random() < 0.08:
                deps = ["sys-devel/gcc-13.3.1_p20240614"]  # fortran / openmp users
            else:
                deps = []
            add(namer.new(), s, deps + pick_deps(layer, n), layer)
        for cpv, s, deps, extra in BIG:
            pn = cpv.split("/")[1].rsplit("-", 1)[0]
            if big_layer[pn] == layer:
                namer.reserve(cpv)
                add(cpv, s, deps + pick_deps(layer, extra), layer)
    return finish(
        "world-1500",
        "Gentoo-like @world: toolchain and core libraries at the bottom, layered libraries, "
        "applications on top, a few very long builds (rust, llvm, gcc, chromium-class).",
        pkgs, rng,
    )


# ---------------------------------------------------------------------------- deep-chains
def make_deep_chains(seed: int = 4242, deep: tuple[int, ...] = (170, 110, 60, 40, 30),
                     short: int = 16) -> dict[str, Any]:
    rng = random.Random(seed)
    namer = Namer(rng)
    pkgs: dict[str, dict[str, Any]] = {}
    base: list[str] = []
    for _ in range(12):
        cpv = namer.new(rng.choice(["sys-libs", "dev-libs", "dev-lang"]))
        deps = [rng.choice(base)] if base and rng.random() < 0.5 else []
        pkgs[cpv] = {"s": small_duration(rng, median=120.0, hi=600.0), "deps": deps}
        base.append(cpv)
    lengths = list(deep) + [rng.randint(4, 16) for _ in range(short)]
    cats = ["dev-haskell", "dev-ocaml", "dev-perl", "dev-python", "dev-ruby", "dev-java",
            "dev-lua", "dev-elixir"]
    chains: list[list[str]] = []
    for length in lengths:
        cat = rng.choice(cats)
        chain: list[str] = []
        for i in range(length):
            cpv = namer.new(cat)
            deps = [chain[-1]] if chain else rng.sample(base, 2)
            # Cross links: an earlier element of another chain (keeps the graph acyclic: the
            # other chain is complete already, or the element is at a lower position).
            if chains and rng.random() < 0.3:
                other = rng.choice(chains)
                j = min(len(other) - 1, max(0, i - rng.randint(1, 6)))
                deps.append(other[j])
            pkgs[cpv] = {"s": small_duration(rng, median=90.0, lo=15.0, hi=600.0),
                         "deps": sorted(set(deps))}
            chain.append(cpv)
        chains.append(chain)
    return finish(
        "deep-chains",
        f"Chain-heavy: {len(lengths)} dependency chains ({len(deep)} of them "
        f"{min(deep)}-{max(deep)} deep) with cross links, on a small base; the critical path "
        "matters as much as the total work.",
        pkgs, rng,
    )


# ---------------------------------------------------------------------------- flat
def make_flat(seed: int = 77) -> dict[str, Any]:
    rng = random.Random(seed)
    namer = Namer(rng)
    pkgs: dict[str, dict[str, Any]] = {}
    base = []
    for _ in range(6):
        cpv = namer.new("dev-libs")
        pkgs[cpv] = {"s": small_duration(rng), "deps": []}
        base.append(cpv)
    for _ in range(1194):
        s = small_duration(rng, median=60.0, hi=600.0)
        r = rng.random()
        if r < 0.005:
            s = float(round(rng.uniform(2000.0, 4500.0), 1))
        elif r < 0.03:
            s = float(round(rng.uniform(600.0, 1500.0), 1))
        deps = [rng.choice(base)] if rng.random() < 0.05 else []
        pkgs[namer.new()] = {"s": s, "deps": deps}
    return finish(
        "flat",
        "1,200 mostly independent packages (5% depend on one of 6 base libraries), a handful "
        "of them long.",
        pkgs, rng,
    )


def dump(workload: dict[str, Any]) -> str:
    """JSON with one drone or package per line: small diffs, still one ``json.load``."""
    lines = ["{"]
    for k, v in workload.items():
        if k in ("drones", "packages"):
            continue
        lines.append(f" {json.dumps(k)}: {json.dumps(v)},")
    for k in ("drones", "packages"):
        items = workload[k]
        lines.append(f" {json.dumps(k)}: [")
        lines.extend("  " + json.dumps(x) + ("," if i < len(items) - 1 else "")
                     for i, x in enumerate(items))
        lines.append(" ]," if k == "drones" else " ]")
    lines.append("}")
    text = "\n".join(lines) + "\n"
    assert json.loads(text) == workload
    return text


WORKLOADS = {
    "world-1500": make_world,
    "deep-chains": make_deep_chains,
    "flat": make_flat,
}


def main(argv: list[str] | None = None) -> int:
    names = (argv if argv is not None else sys.argv[1:]) or list(WORKLOADS)
    OUT.mkdir(parents=True, exist_ok=True)
    for name in names:
        w = WORKLOADS[name]()
        path = OUT / f"{name}.json"
        path.write_text(dump(w))
        print(f"{path}: {len(w['packages'])} packages, {len(w['drones'])} drones")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
