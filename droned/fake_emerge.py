"""A stand-in for ``emerge`` for tests and the demo: prints emerge-like output, sleeps a scaled
compile time (in a child "make" process, as emerge's build does), then writes a real binary
package (an uncompressed tar, GPKG layout) into PKGDIR.

    python -m droned.fake_emerge [emerge options] [--pkgdir DIR] [--seconds S] =cat/pkg-1.0

Compile time, first that applies: ``--seconds``; ``FAKE_EMERGE_SECONDS``; ``FAKE_EMERGE_TIMES``
(a JSON file mapping ``cat/pkg-1.0`` or ``cat/pkg`` to seconds on 8 cores, scaled by
``FAKE_EMERGE_CORES``: ``s * 8 / cores``); else 1 s. Everything is divided by
``FAKE_EMERGE_SPEED`` (default 1). ``FAKE_EMERGE_FAIL``: comma-separated CPVs that always fail
(exit 1). ``FAKE_EMERGE_NOPKG``: CPVs that "succeed" without writing a package.
``FAKE_EMERGE_PIDFILE``: write "emerge_pid make_pid" there (tests check the group is killed).
PKGDIR: ``--pkgdir``, else ``$PKGDIR``, else /var/cache/binpkgs.

The package is ``PKGDIR/cat/pn/pf-N.gpkg.tar`` (N: the next free binpkg-multi-instance build
id) holding ``pf/gpkg-1``, ``pf/metadata.tar.xz``, ``pf/image.tar.xz`` and ``pf/Manifest``;
its content depends only on the CPV.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
from pathlib import Path

from portage.versions import catpkgsplit

EPOCH = 1700000000  # fixed member mtime: same CPV, same bytes


def _cpvs(env: str) -> set[str]:
    return {c.strip().lstrip("=") for c in os.environ.get(env, "").split(",") if c.strip()}


def compile_seconds(cpv: str, explicit: float | None) -> float:
    cat_pn = cpv.rsplit("-", 1)[0]
    parts = catpkgsplit(cpv)
    if parts is not None and parts[0] is not None:
        cat_pn = f"{parts[0]}/{parts[1]}"
    speed = float(os.environ.get("FAKE_EMERGE_SPEED", "1") or 1)
    if explicit is not None:
        secs = explicit
    elif os.environ.get("FAKE_EMERGE_SECONDS"):
        secs = float(os.environ["FAKE_EMERGE_SECONDS"])
    elif os.environ.get("FAKE_EMERGE_TIMES"):
        table = json.loads(Path(os.environ["FAKE_EMERGE_TIMES"]).read_text())
        base = table.get(cpv, table.get(cat_pn, table.get("default", 8.0)))
        cores = float(os.environ.get("FAKE_EMERGE_CORES", "8") or 8)
        secs = float(base) * 8.0 / cores
    else:
        secs = 1.0
    return max(0.0, secs / speed)


def _member(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = EPOCH
    info.mode = mode
    info.uname = info.gname = "root"
    tar.addfile(info, io.BytesIO(data))


def _xz_tar(files: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:xz", format=tarfile.GNU_FORMAT) as tar:
        for name in sorted(files):
            _member(tar, name, files[name], 0o755 if "/bin/" in name else 0o644)
    return buf.getvalue()


def package_bytes(cpv: str, chost: str = "x86_64-pc-linux-gnu") -> bytes:
    """The whole .gpkg.tar for a CPV, deterministic."""
    parts = catpkgsplit(cpv)
    if parts is None or parts[0] is None:
        raise ValueError(f"not a CPV: {cpv}")
    cat, pn, ver, rev = parts
    pf = cpv.split("/", 1)[1]
    seed = hashlib.sha256(cpv.encode()).digest()
    blob = b"".join(hashlib.sha256(seed + bytes([i])).digest() for i in range(64))  # 2 KiB
    metadata = {
        "CATEGORY": cat, "PF": pf, "SLOT": "0", "EAPI": "8", "CHOST": chost,
        "KEYWORDS": "amd64", "LICENSE": "GPL-2", "DESCRIPTION": f"fake build of {cpv}",
        "USE": "amd64 elibc_glibc kernel_linux", "repository": "gentoo",
        "PROVIDES": "", "REQUIRES": "x86_64: libc.so.6", "BUILD_TIME": str(EPOCH),
    }
    meta_tar = _xz_tar({f"metadata/{k}": (v + "\n").encode() for k, v in metadata.items()})
    doc = f"{pn} {ver}{'' if rev == 'r0' else '-' + rev}, built by fake_emerge\n".encode()
    image_tar = _xz_tar({
        f"image/usr/bin/{pn}": b"#!/bin/sh\necho " + pn.encode() + b"\n",
        f"image/usr/share/doc/{pf}/README": doc,
        f"image/usr/lib64/lib{pn}.so.1": blob,
    })
    members = {"gpkg-1": b"", "metadata.tar.xz": meta_tar, "image.tar.xz": image_tar}
    manifest = "".join(
        f"DATA {n} {len(d)} SHA512 {hashlib.sha512(d).hexdigest()} "
        f"BLAKE2B {hashlib.blake2b(d).hexdigest()}\n"
        for n, d in members.items() if n != "gpkg-1"
    ).encode()
    members["Manifest"] = manifest
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name in ("gpkg-1", "metadata.tar.xz", "image.tar.xz", "Manifest"):
            _member(tar, f"{pf}/{name}", members[name])
    return buf.getvalue()


def write_package(pkgdir: Path, cpv: str) -> Path:
    parts = catpkgsplit(cpv)
    assert parts is not None
    cat, pn = str(parts[0]), str(parts[1])
    pf = cpv.split("/", 1)[1]
    d = pkgdir / cat / pn
    d.mkdir(parents=True, exist_ok=True)
    stem = re.compile(re.escape(pf) + r"-([0-9]+)\.gpkg\.tar")
    used = [int(m.group(1)) for p in d.iterdir() if (m := stem.fullmatch(p.name))]
    n = max(used, default=0) + 1
    while True:
        path = d / f"{pf}-{n}.gpkg.tar"
        tmp = d / f".{pf}-{n}.gpkg.tar.{os.getpid()}.partial"
        tmp.write_bytes(package_bytes(cpv))
        try:
            os.link(tmp, path)  # fails if a concurrent build took this N
        except FileExistsError:
            tmp.unlink()
            n += 1
            continue
        tmp.unlink()
        return path


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="fake_emerge", description=__doc__.split("\n")[0])
    ap.add_argument("--pkgdir", default=os.environ.get("PKGDIR", "/var/cache/binpkgs"))
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("atoms", nargs="+")
    args, _emerge_opts = ap.parse_known_args(argv)
    atoms = [a for a in args.atoms if not a.startswith("-")]
    if len(atoms) != 1:
        say("!!! fake_emerge builds exactly one =cat/pkg-version atom")
        return 2
    cpv = atoms[0].lstrip("=")
    parts = catpkgsplit(cpv)
    if parts is None or parts[0] is None:
        say(f'!!! "{atoms[0]}" is not a valid package atom.')
        return 1
    cat, pn, ver, _rev = parts
    pf = cpv.split("/", 1)[1]
    secs = compile_seconds(cpv, args.seconds)
    jobs = int(os.environ.get("FAKE_EMERGE_CORES", "8") or 8)
    work = f"/var/tmp/portage/{cat}/{pf}/work/{pn}-{ver}"

    say("Calculating dependencies... done!")
    say("Dependency resolution took 0.42 s.")
    say("")
    say(">>> Verifying ebuild manifests")
    say(f">>> Emerging (1 of 1) {cpv}::gentoo")
    say(f" * {pn}-{ver}.tar.xz BLAKE2B SHA512 size ;-) ...                   [ ok ]")
    say(">>> Unpacking source...")
    say(f">>> Unpacking {pn}-{ver}.tar.xz to /var/tmp/portage/{cat}/{pf}/work")
    say(f">>> Source unpacked in /var/tmp/portage/{cat}/{pf}/work")
    say(f">>> Preparing source in {work} ...")
    say(f">>> Configuring source in {work} ...")
    say(f">>> Compiling source in {work} ...")
    say(f"make -j{jobs} -l{jobs}")

    make = subprocess.Popen(
        [sys.executable, "-c", f"import time; time.sleep({secs!r})"],
        stdin=subprocess.DEVNULL,
    )
    pidfile = os.environ.get("FAKE_EMERGE_PIDFILE")
    if pidfile:
        Path(pidfile).write_text(f"{os.getpid()} {make.pid}\n")
    start = time.monotonic()
    steps = 10
    for i in range(1, steps + 1):
        target = start + secs * i / steps
        while (left := target - time.monotonic()) > 0 and make.poll() is None:
            time.sleep(min(left, 0.05))
        say(f"[{100 * i // steps:3d}%] Building C object CMakeFiles/{pn}.dir/src/part{i}.c.o")
    rc = make.wait()
    if rc != 0:
        say(f"make: *** [Makefile:{rc}] Error {rc}")
        return 1

    if cpv in _cpvs("FAKE_EMERGE_FAIL"):
        say(f"{work}/src/{pn}.c:42:10: error: 'struct foo' has no member named 'bar'")
        say(f"make: *** [Makefile:1234: src/{pn}.o] Error 1")
        say(f" * ERROR: {cpv}::gentoo failed (compile phase):")
        say(" *   emake failed")
        say(f" * The complete build log is located at '/var/tmp/portage/{cat}/{pf}/temp/build.log'.")
        return 1

    say(">>> Source compiled.")
    say(f">>> Test phase [not enabled]: {cpv}")
    say(f">>> Install {cat}/{pf} into /var/tmp/portage/{cat}/{pf}/image")
    say(f">>> Completed installing {pf} into /var/tmp/portage/{cat}/{pf}/image")
    if cpv not in _cpvs("FAKE_EMERGE_NOPKG"):
        path = write_package(Path(args.pkgdir), cpv)
        say(f" * Building package for {pf} ...")
        say(f">>> Done: {path}")
    say(f">>> Installing (1 of 1) {cpv}::gentoo")
    say(f">>> Recording {cat}/{pn} in \"world\" favorites file...")
    say(f">>> Completed (1 of 1) {cpv}::gentoo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
