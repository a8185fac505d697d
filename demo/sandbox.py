"""Portage sandboxes for the demo, the tests and the benchmarks: real portage, no host change.

A sandbox is a portage prefix (``PORTAGE_OVERRIDE_EPREFIX=<dir>``): its own ``etc/portage``
(make.conf, repos.conf, make.profile, binrepos.conf, package.use), package database, PKGDIR,
PORTAGE_TMPDIR and installed files, all under ``<dir>``. The host's ``/etc/portage`` and
``/var/db/pkg`` are never read or written.

What a pip-installed portage needs to run real ebuild phases here (measured on Debian):
- ``<dir>/share/portage/config/{make.globals,sets/portage.conf}`` linked to the copies that
  ship with the installed portage (with ``PORTAGE_OVERRIDE_EPREFIX`` set they are looked up
  under the prefix);
- ``PORTAGE_USERNAME``/``PORTAGE_GRPNAME`` root and FEATURES without the sandbox and userpriv
  family (no sandbox binary, no portage user);
- a ``gtar`` on PATH (xpak and gpkg code call it), ``NO_COLOR=1`` (``--color=n`` leaves
  escapes that ebuild phases print).

``Sandbox.env()`` is the environment overlay that selects a sandbox: give it to ``emerge``, to
a drone's ``build_env``, to ``build-swarm submit`` or to swarmd (which publishes into its
binhost with the portage configuration of its own environment).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import attrs

REPO = Path(__file__).resolve().parent / "repo"
FEATURES = (
    "-sandbox -usersandbox -userpriv -usersync -userfetch -network-sandbox -ipc-sandbox "
    "-pid-sandbox -mount-sandbox -news -merge-wait -preserve-libs nostrip"
)


def portage_share() -> Path:
    """``share/portage/config`` of the installed portage (beside this interpreter's prefix)."""
    for base in (Path(sys.prefix), Path(sys.base_prefix), Path("/usr")):
        cfg = base / "share" / "portage" / "config"
        if (cfg / "make.globals").is_file():
            return cfg
    raise FileNotFoundError("portage's make.globals not found under "
                            f"{sys.prefix}/share/portage/config: is portage installed?")


def tools_dir() -> Path:
    """A directory to put first on PATH: ``gtar`` and the interpreter's bin (emerge, ...)."""
    d = Path(sys.prefix) / "share" / "build-swarm-tools"
    gtar = d / "gtar"
    if not gtar.exists():
        d.mkdir(parents=True, exist_ok=True)
        tar = shutil.which("tar") or "/bin/tar"
        try:
            gtar.symlink_to(tar)
        except FileExistsError:
            pass
    return d


@attrs.frozen
class Sandbox:
    root: Path

    @property
    def pkgdir(self) -> Path:
        return self.root / "var" / "cache" / "binpkgs"

    @property
    def vdb(self) -> Path:
        return self.root / "var" / "db" / "pkg"

    def env(self) -> dict[str, str]:
        path = os.pathsep.join([str(tools_dir()), str(Path(sys.executable).parent),
                                os.environ.get("PATH", "/usr/bin:/bin")])
        return {"PORTAGE_OVERRIDE_EPREFIX": str(self.root), "NO_COLOR": "1", "PATH": path}

    def installed(self) -> list[str]:
        """CPVs in the package database (``cat/pf``), sorted."""
        out = []
        if self.vdb.is_dir():
            for cat in sorted(self.vdb.iterdir()):
                for pf in sorted(cat.iterdir()):
                    if (pf / "CONTENTS").exists() or (pf / "environment.bz2").exists():
                        out.append(f"{cat.name}/{pf.name}")
        return out

    def installed_meta(self, cpv: str, key: str) -> str | None:
        p = self.vdb / cpv / key
        try:
            return p.read_text().strip()
        except OSError:
            return None

    def emerge(self, *args: str, timeout: float = 300,
               env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        """Run the real ``emerge`` in this sandbox; the caller checks what it installed."""
        return subprocess.run(["emerge", *args], env={**os.environ, **self.env(), **(env or {})},
                              capture_output=True, text=True, timeout=timeout, check=False)


def make_sandbox(root: Path, *, repo: Path = REPO, world: Iterable[str] = (),
                 binhost_url: str | None = None, package_use: Iterable[str] = (),
                 make_conf: str = "", profile: str = "default") -> Sandbox:
    """Create (or refresh the configuration of) a sandbox at ``root`` using ``repo``.

    ``world`` goes to the world file; ``binhost_url`` to ``binrepos.conf`` (the swarm's binhost
    for drones and clients); ``package_use`` lines to ``package.use``; ``make_conf`` is appended
    to make.conf.
    """
    root = root.resolve()
    repo = repo.resolve()
    share = portage_share()
    etc = root / "etc" / "portage"
    for d in (etc / "repos.conf", etc / "binrepos.conf", root / "share/portage/config/sets",
              root / "var/cache/binpkgs", root / "var/cache/distfiles", root / "var/tmp",
              root / "var/lib/portage", root / "var/db/repos", root / "var/log"):
        d.mkdir(parents=True, exist_ok=True)
    for rel in ("make.globals", "sets/portage.conf"):
        link = root / "share/portage/config" / rel
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(share / rel)
    profile_link = etc / "make.profile"
    if profile_link.is_symlink() or profile_link.exists():
        profile_link.unlink()
    profile_link.symlink_to(repo / "profiles" / profile)
    repo_name = (repo / "profiles" / "repo_name").read_text().strip()
    (etc / "repos.conf" / "swarm.conf").write_text(
        f"[DEFAULT]\nmain-repo = {repo_name}\n\n[{repo_name}]\nlocation = {repo}\n")
    conf = (
        f'FEATURES="{FEATURES}"\n'
        "PORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n"
        f'PKGDIR="{root}/var/cache/binpkgs"\n'
        f'PORTAGE_TMPDIR="{root}/var/tmp"\n'
        f'DISTDIR="{root}/var/cache/distfiles"\n'
        f'PORT_LOGDIR="{root}/var/log/portage"\n'
        "CLEAN_DELAY=0\nEMERGE_WARNING_DELAY=0\n"
        "PORTAGE_BINHOST_TTL=0\n"
    )
    (etc / "make.conf").write_text(conf + make_conf)
    binrepo = etc / "binrepos.conf" / "build-swarm.conf"
    if binhost_url:
        binrepo.write_text(f"[build-swarm]\npriority = 10\nsync-uri = {binhost_url}\n")
    elif binrepo.exists():
        binrepo.unlink()
    (etc / "package.use").write_text("".join(f"{line}\n" for line in package_use))
    (root / "var/lib/portage/world").write_text("".join(f"{a}\n" for a in world))
    return Sandbox(root)


def make_publisher_env(root: Path) -> dict[str, str]:
    """A minimal portage configuration for swarmd's publishing (make.globals, no profile):
    binarytree needs FEATURES (binpkg-multi-instance) and the index settings from it."""
    root = root.resolve()
    share = portage_share()
    (root / "etc/portage").mkdir(parents=True, exist_ok=True)
    (root / "share/portage/config/sets").mkdir(parents=True, exist_ok=True)
    for rel in ("make.globals", "sets/portage.conf"):
        link = root / "share/portage/config" / rel
        if not (link.is_symlink() or link.exists()):
            link.symlink_to(share / rel)
    (root / "etc/portage/make.conf").write_text(
        f'FEATURES="{FEATURES}"\nPORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n')
    return {"PORTAGE_OVERRIDE_EPREFIX": str(root), "PATH": Sandbox(root).env()["PATH"]}
