"""Publishing built packages into the binhost index with portage's own code (SPEC section 12).

Theory of operation
-------------------
A drone syncs the one file its build produced to ``<binhost_dir>/<relpath>`` where relpath is
``cat/pn/<pf>-<BUILD_ID>.<ext>.<build id>.upload``: a name no other build can take, and one
that portage does not take for a package (it does not end in ``.gpkg.tar``/``.xpak``/``.tbz2``),
so an upload waiting for its publish never disturbs ``emaint binhost``.

swarmd publishes one build at a time (``Binhost.publish``, blocking: swarmd runs it in a worker
thread, one call at a time):

1. the upload is there, with the size and sha256 the drone reported (else: "never arrived",
   "corrupt upload");
2. the package's own metadata names the leased CPV, and its BUILD_ID gives the final name
   ``cat/pn/<pf>-<BUILD_ID>.<ext>`` (the name ``emaint binhost --fix`` would expect);
3. if that name is taken by other content, the publish fails (a build-id collision: the
   retry builds again and its drone allocates a higher BUILD_ID, since it sees this binhost);
4. ``binarytree.inject`` takes portage's index lock, re-reads ``Packages`` (so an index edited
   by hand meanwhile is kept), moves the file to its final name and writes ``Packages`` (and
   ``Packages.gz``) atomically.

Portage re-reads a remote index only when its ``TIMESTAMP`` (whole seconds) is newer than the
copy it holds. So no two index writes may carry the same TIMESTAMP: before each write the
publisher waits for a second later than the last write's. (At most one publish per second: a
binhost that needs more should batch; see docs/BENCHMARKS.md.)

Over HTTP there is a second rule. Portage asks for the index with ``If-Modified-Since`` set to
its copy's TIMESTAMP *plus 5 seconds* (``TIMESTAMP_TOLERANCE`` in portage's URL opener), and
portage itself gives the index files the mtime of their TIMESTAMP, so a web server that honours
If-Modified-Since (nginx, Python's http.server) answers "304 Not Modified" for any index written
within 5 s of the copy a drone holds: the drone keeps building against an index that lacks the
dependency swarmd just published. (Seen in ``make demo``: "plan: would compile
swarm-demo/libgreet-1.0 from source", 2 runs in 3.) So after each write the publisher sets the
mtime of ``Packages`` and ``Packages.gz`` to TIMESTAMP + 5: a server's Last-Modified is then newer
than a client's If-Modified-Since exactly when the index is newer than the client's copy.

The steps are idempotent after a crash: a publish that is journaled as begun but not as done
is simply run again; if the upload is gone but the final file has the reported sha256, the
move happened and only the index write is redone (``inject`` replaces an entry with the same
path).

Portage reads its configuration from this process's environment (``PORTAGE_CONFIGROOT``,
``PORTAGE_OVERRIDE_EPREFIX``); the binhost needs ``FEATURES=binpkg-multi-instance`` there
(make.globals has it), else ``Binhost`` refuses to start with one clear line.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import attrs

from swarmlib.errors import ConfigError
from swarmlib.files import sha256_file

log = logging.getLogger("swarmd.binhost")

SUFFIXES = (".gpkg.tar", ".xpak", ".tbz2")
IMS_TOLERANCE_S = 5  # what portage adds to its copy's TIMESTAMP in If-Modified-Since
UPLOAD_SUFFIX = ".upload"


class PublishError(Exception):
    """This build's package cannot be published; the attempt counts as failed."""


class Collision(PublishError):
    """Another build of the package took its BUILD_ID first: built again, no attempt counted."""


@attrs.frozen(kw_only=True)
class Published:
    path: str  # binhost-relative final path
    size: int
    sha256: str
    build_id: int  # portage's BUILD_ID


sha256_of = sha256_file  # (size, sha256 hex); the name bench/publish.py times


def final_name(upload_rel: str) -> tuple[str, str, str]:
    """``cat/pn/hello-1.0-1.gpkg.tar.b-0000007.upload`` -> (final relpath, basename, suffix).

    Raises PublishError when the name is not an upload name.
    """
    if not upload_rel.endswith(UPLOAD_SUFFIX):
        raise PublishError(f"{upload_rel}: not an upload name (expected "
                           f"cat/pn/<file>.<build id>{UPLOAD_SUFFIX})")
    stem = upload_rel[: -len(UPLOAD_SUFFIX)]
    stem = stem.rsplit(".", 1)[0]  # drop the swarm build id
    for sfx in SUFFIXES:
        if stem.endswith(sfx):
            base = os.path.basename(stem)[: -len(sfx)]
            if sfx == ".tbz2":
                stem = stem[: -len(sfx)] + ".xpak"
                sfx = ".xpak"
            return stem, base, sfx
    raise PublishError(f"{upload_rel}: not a binary package name (.gpkg.tar or .xpak)")


class Binhost:
    """The binhost tree at ``root`` and its index. Blocking calls; one publish at a time."""

    def __init__(self, root: Path) -> None:
        self.root = root.resolve()
        self._lock = threading.Lock()
        self._last_ts = 0
        self._settings: Any = None
        self._bt: Any = None

    def open(self) -> None:
        """Load portage and check its configuration; raises ConfigError (one line)."""
        self.root.mkdir(parents=True, exist_ok=True)
        try:
            import portage

            settings = portage.config(clone=portage.settings)
        except Exception as exc:  # portage fails in many ways without make.globals
            raise ConfigError(
                f"binhost_dir: swarmd cannot load its portage configuration "
                f"({type(exc).__name__}: {exc}); it needs make.globals with "
                "FEATURES=binpkg-multi-instance (check PORTAGE_CONFIGROOT / "
                "PORTAGE_OVERRIDE_EPREFIX of the swarmd service)") from None
        if "binpkg-multi-instance" not in settings.features:
            raise ConfigError(
                "binhost_dir: swarmd's portage configuration lacks "
                "FEATURES=binpkg-multi-instance (is make.globals found? check "
                "PORTAGE_CONFIGROOT / PORTAGE_OVERRIDE_EPREFIX of the swarmd service)")
        self._settings = settings
        self._last_ts = self.index_timestamp()
        if not (self.root / "Packages").exists():
            # An empty index, so that clients and drones see a valid binhost from the start.
            self._write_empty_index()

    def _tree(self) -> Any:
        """One binarytree for the life of the publisher: it reads the index once to populate;
        ``inject`` itself re-reads ``Packages`` under portage's lock at every publish, so
        packages added by hand meanwhile are kept."""
        if self._bt is None:
            from portage.dbapi.bintree import binarytree

            self._bt = binarytree(pkgdir=str(self.root), settings=self._settings)
        return self._bt

    def _write_empty_index(self) -> None:
        from portage.getbinpkg import PackageIndex
        from portage.util import atomic_ofstream

        self._wait_new_second()
        idx = PackageIndex(default_header_data={"VERSION": "0"})
        idx.modified = True
        out = atomic_ofstream(str(self.root / "Packages"), mode="w", encoding="utf-8")
        try:
            idx.write(out)
        except BaseException:
            out.abort()
            raise
        out.close()
        self._last_ts = self.index_timestamp()
        self._stamp()

    def _stamp(self) -> None:
        """Give the index files the mtime TIMESTAMP + IMS_TOLERANCE_S (module docstring)."""
        ts = self.index_timestamp()
        if not ts:
            return
        for name in ("Packages", "Packages.gz"):
            try:
                os.utime(self.root / name, (ts + IMS_TOLERANCE_S, ts + IMS_TOLERANCE_S))
            except FileNotFoundError:
                pass

    def index_timestamp(self) -> int:
        try:
            with (self.root / "Packages").open(encoding="utf-8", errors="replace") as fh:
                for line in fh:
                    if not line.strip():
                        break
                    if line.startswith("TIMESTAMP:"):
                        return int(line.split(":", 1)[1].strip())
        except (OSError, ValueError):
            pass
        return 0

    def _wait_new_second(self) -> None:
        last = max(self._last_ts, self.index_timestamp())
        while int(time.time()) <= last:
            time.sleep(max(0.01, last + 1 - time.time()))

    def read_meta(self, path: Path, basename: str, sfx: str) -> dict[str, str]:
        """CATEGORY, PF, BUILD_ID, USE of a package file, from the package itself."""
        want = ["CATEGORY", "PF", "BUILD_ID", "USE"]
        try:
            if sfx == ".gpkg.tar":
                from portage.gpkg import gpkg

                raw = gpkg(self._settings, basename, str(path)).get_metadata(want)
                meta = {k: (v.decode() if isinstance(v, bytes) else (v or "")) for k, v in
                        raw.items()}
            else:
                from portage.xpak import tbz2

                t = tbz2(str(path))
                meta = {k: (t.getfile(k, b"") or b"").decode() for k in want}
        except Exception as exc:  # portage raises many kinds for a damaged file
            raise PublishError(f"not a readable binary package: {type(exc).__name__}: {exc}") \
                from None
        return {k: str(v).strip() for k, v in meta.items()}

    def publish(self, cpv: str, upload_rel: str, size: int, sha256: str) -> Published:
        """Check the upload and add it to the index (see the module docstring).

        Blocking; raises PublishError (the attempt failed, nothing was published).
        """
        with self._lock:
            return self._publish(cpv, upload_rel, size, sha256)

    def _publish(self, cpv: str, upload_rel: str, size: int, sha256: str) -> Published:
        if self._settings is None:
            self.open()
        if upload_rel.startswith("/") or ".." in upload_rel.split("/"):
            raise PublishError(f"{upload_rel}: not a path under the binhost")
        final_rel, basename, sfx = final_name(upload_rel)
        upload = self.root / upload_rel
        final = self.root / final_rel
        cat, pf = cpv.split("/", 1)
        if not basename.startswith(pf + "-"):
            raise PublishError(f"{upload_rel}: the file name does not name {cpv}")
        if upload.exists():
            got_size, got_sha = sha256_of(upload)
            if got_size != size or got_sha != sha256:
                raise PublishError(
                    f"corrupt upload {upload_rel}: {got_size} bytes, sha256 {got_sha[:16]}..., "
                    f"the drone reported {size} bytes, sha256 {sha256[:16]}...")
            source = upload
        elif final.exists() and sha256_of(final) == (size, sha256):
            source = final  # moved before a crash: only the index write is left to do
        else:
            raise PublishError(f"the package file never arrived: {upload_rel} is not in the "
                               f"binhost (check the drone's sync_command and binhost_target)")
        meta = self.read_meta(source, basename, sfx)
        if meta.get("CATEGORY") != cat or meta.get("PF") != pf:
            raise PublishError(f"{upload_rel} holds {meta.get('CATEGORY')}/{meta.get('PF')}, "
                               f"not the leased {cpv}")
        try:
            build_id = int(meta.get("BUILD_ID") or "")
        except ValueError:
            raise PublishError(f"{upload_rel}: the package has no BUILD_ID (the drone's "
                               "portage needs FEATURES=binpkg-multi-instance)") from None
        if basename != f"{pf}-{build_id}":
            raise PublishError(f"{upload_rel}: file name says {basename}, the package's "
                               f"BUILD_ID is {build_id}")
        if source is upload and final.exists():
            if sha256_of(final) != (size, sha256):
                raise Collision(
                    f"build id collision: {final_rel} is already published with other "
                    f"content; a rebuild gets a new BUILD_ID")
        self._wait_new_second()
        tree = self._tree()
        got = tree.inject(cpv, current_pkg_path=str(source), allocated_pkg_path=str(final))
        self._last_ts = self.index_timestamp()
        self._stamp()
        if got is None:
            raise PublishError(f"portage refused {upload_rel} as a binary package of {cpv} "
                               f"(see swarmd's log for portage's message)")
        if upload.exists() and source is upload:
            upload.unlink()
        st = final.stat()
        return Published(path=final_rel, size=st.st_size, sha256=sha256, build_id=build_id)

    def restore(self, cpv: str, rel: str, size: int, sha256: str) -> str:
        """Put a published package that is missing from the index back (after a crash, or an
        index replaced by hand). ``"restored"``, ``"missing"`` (no file) or ``"changed"`` (the
        file is not what was published). Blocking."""
        with self._lock:
            if self._settings is None:
                self.open()
            path = self.root / rel
            if not path.is_file():
                return "missing"
            if sha256_of(path) != (size, sha256):
                return "changed"
            self._wait_new_second()
            got = self._tree().inject(cpv, current_pkg_path=str(path),
                                      allocated_pkg_path=str(path))
            self._last_ts = self.index_timestamp()
            self._stamp()
            return "restored" if got is not None else "changed"

    def reindex(self) -> None:
        """Rebuild ``Packages`` from the package files with portage's own tool,
        ``emaint binhost --fix`` (PKGDIR=binhost_dir): for many missing entries at once, one
        index write instead of one per package, with the digests clients check (binarytree's
        ``populate(force_reindex=True)`` writes entries without MD5, which
        ``emaint binhost --check`` then reports as missing). Blocking."""
        with self._lock:
            if self._settings is None:
                self.open()
            self._wait_new_second()
            path = os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")])
            emaint = shutil.which("emaint", path=path)
            if emaint is None:
                raise OSError("emaint (portage) not found on PATH: cannot reindex the binhost")
            out = subprocess.run([emaint, "binhost", "--fix"], capture_output=True, text=True,
                                 env={**os.environ, "PKGDIR": str(self.root)}, check=False,
                                 timeout=24 * 3600)
            if out.returncode != 0:
                raise OSError(f"emaint binhost --fix failed ({out.returncode}): "
                              f"{(out.stderr or out.stdout).strip()[-500:]}")
            self._bt = None  # repopulate from the new index at the next publish
            self._last_ts = self.index_timestamp()
            self._stamp()

    def discard_upload(self, upload_rel: str) -> bool:
        """Remove an upload that will never be published (its publish failed). Blocking."""
        if upload_rel.startswith("/") or ".." in upload_rel.split("/"):
            return False
        if not upload_rel.endswith(UPLOAD_SUFFIX):
            return False
        try:
            (self.root / upload_rel).unlink()
            return True
        except OSError:
            return False

    def sweep_uploads(self, keep: set[str], older_than_s: float,
                      live_builds: set[str] | None = None) -> list[str]:
        """Remove ``*.upload`` files older than ``older_than_s`` that no publishing build
        names (``keep``) and whose build (the id in the name, ``<file>.<build id>.upload``) is
        not in ``live_builds`` (unfinished: its report may still come): uploads of builds whose
        report swarmd refused (a superseded lease) or that ended without one. The age counts
        from the file's ctime (when it arrived here), not its mtime (rsync -a keeps the
        drone's). Returns the relative paths removed. Blocking."""
        gone = []
        cutoff = time.time() - older_than_s
        for path in self.root.rglob("*" + UPLOAD_SUFFIX):
            rel = str(path.relative_to(self.root))
            build = rel[: -len(UPLOAD_SUFFIX)].rsplit(".", 1)[-1]
            try:
                if rel in keep or (live_builds is not None and build in live_builds):
                    continue
                st = path.stat()
                if max(st.st_mtime, st.st_ctime) > cutoff:
                    continue
                path.unlink()
                gone.append(rel)
            except OSError:
                continue
        return gone

    def indexed(self) -> dict[str, str]:
        """{PATH: CPV} of every package in ``Packages`` (for checks after recovery)."""
        from portage.getbinpkg import PackageIndex

        idx = PackageIndex()
        try:
            with (self.root / "Packages").open(encoding="utf-8", errors="replace") as fh:
                idx.read(fh)
        except OSError:
            return {}
        return {str(d.get("PATH")): str(d.get("CPV")) for d in idx.packages}
