"""The agent with the real emerge of the venv's portage, in a throwaway portage prefix.

Nothing of the host's portage configuration or package database is read or written: the
sandbox is ``PORTAGE_OVERRIDE_EPREFIX=<tmp>/sb`` with its own make.conf, repository, PKGDIR and
package database, handed to the drone as ``build_env``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sys
from pathlib import Path

import pytest
import trio

from droned.agent import Agent

from .fakes import IDENTITY, FakeSwarmd, drone_config

pytestmark = pytest.mark.slow

PORTAGE_SHARE = Path(sys.prefix) / "share" / "portage" / "config"
EMERGE = Path(sys.executable).parent / "emerge"

EBUILD = """EAPI=8
DESCRIPTION="{pn}"
HOMEPAGE="https://example.invalid"
LICENSE="GPL-2"
SLOT="0"
KEYWORDS="amd64"
S="${{WORKDIR}}"
{extra}
"""
PACKAGES = {
    "libgreet": EBUILD.format(pn="libgreet", extra=(
        'IUSE="+unicode"\n'
        'src_compile() { echo "hello $(usex unicode unicode ascii)" > greeting || die; }\n'
        "src_install() { insinto /usr/share/libgreet; doins greeting; }")),
    "buildtool": EBUILD.format(pn="buildtool", extra=(
        "src_compile() { echo tool > swarm-tool || die; }\n"
        "src_install() { insinto /usr/share/buildtool; doins swarm-tool; }")),
    "hello": EBUILD.format(pn="hello", extra=(
        'IUSE="shout"\nRDEPEND="swarm-demo/libgreet"\nDEPEND="${RDEPEND}"\n'
        'BDEPEND="swarm-demo/buildtool"\n'
        "src_compile() { echo hi > hello || die; }\n"
        "src_install() { insinto /usr/share/hello; doins hello; }")),
}
FEATURES = ("-sandbox -usersandbox -userpriv -usersync -userfetch -network-sandbox "
            "-ipc-sandbox -pid-sandbox -mount-sandbox -news -merge-wait")


def make_sandbox(base: Path) -> dict[str, str]:
    """A portage prefix with a tiny EAPI-8 repository; returns its environment overlay."""
    repo = base / "repo"
    for pn, text in PACKAGES.items():
        d = repo / "swarm-demo" / pn
        d.mkdir(parents=True)
        (d / f"{pn}-1.0.ebuild").write_text(text)
    (repo / "metadata").mkdir()
    (repo / "metadata" / "layout.conf").write_text(
        "masters =\nthin-manifests = true\nsign-manifests = false\n")
    prof = repo / "profiles" / "default"
    prof.mkdir(parents=True)
    (repo / "profiles" / "repo_name").write_text("swarm-demo\n")
    (repo / "profiles" / "categories").write_text("swarm-demo\n")
    (prof / "eapi").write_text("8\n")
    (prof / "make.defaults").write_text(
        'ARCH="amd64"\nACCEPT_KEYWORDS="amd64"\nCHOST="x86_64-pc-linux-gnu"\n'
        'CFLAGS="-O2 -pipe"\nCXXFLAGS="${CFLAGS}"\nLDFLAGS="-Wl,-O1"\nELIBC="glibc"\n'
        'KERNEL="linux"\nUSERLAND="GNU"\nIUSE_IMPLICIT="prefix prefix-guest"\n'
        'USE_EXPAND_IMPLICIT="ARCH ELIBC KERNEL USERLAND"\nUSE_EXPAND_VALUES_ARCH="amd64"\n'
        'USE_EXPAND_VALUES_ELIBC="glibc"\nUSE_EXPAND_VALUES_KERNEL="linux"\n'
        'USE_EXPAND_VALUES_USERLAND="GNU"\n')
    sb = base / "sb"
    share = sb / "share" / "portage" / "config"
    (share / "sets").mkdir(parents=True)
    (share / "make.globals").symlink_to(PORTAGE_SHARE / "make.globals")
    (share / "sets" / "portage.conf").symlink_to(PORTAGE_SHARE / "sets" / "portage.conf")
    etc = sb / "etc" / "portage"
    (etc / "repos.conf").mkdir(parents=True)
    (etc / "make.profile").symlink_to(prof)
    (etc / "repos.conf" / "swarm-demo.conf").write_text(
        f"[DEFAULT]\nmain-repo = swarm-demo\n[swarm-demo]\nlocation = {repo}\n")
    (etc / "make.conf").write_text(
        f'FEATURES="{FEATURES}"\nPORTAGE_USERNAME=root\nPORTAGE_GRPNAME=root\n'
        f'PKGDIR="{sb}/var/cache/binpkgs"\nPORTAGE_TMPDIR="{sb}/var/tmp"\n'
        f'DISTDIR="{sb}/var/cache/distfiles"\nCLEAN_DELAY=0\nEMERGE_WARNING_DELAY=0\n')
    for sub in ("var/cache/binpkgs", "var/tmp", "var/cache/distfiles"):
        (sb / sub).mkdir(parents=True)
    tools = base / "tools"
    tools.mkdir()
    (tools / "gtar").symlink_to(shutil.which("tar") or "/bin/tar")
    path = os.pathsep.join([str(tools), str(EMERGE.parent), os.environ.get("PATH", "/usr/bin")])
    return {"PORTAGE_OVERRIDE_EPREFIX": str(sb), "NO_COLOR": "1", "PATH": path}


@pytest.mark.skipif(not (EMERGE.exists() and (PORTAGE_SHARE / "make.globals").exists()
                         and shutil.which("tar") and shutil.which("bash")),
                    reason="needs the venv's portage (emerge, make.globals), tar and bash")
async def test_real_emerge_builds_only_the_package_and_checks_use(
    fake_swarmd: FakeSwarmd, tmp_path: Path
) -> None:
    env = make_sandbox(tmp_path)
    cfg = drone_config(
        tmp_path, fake_swarmd.url, build_env=env,
        build_command=["emerge", "--oneshot", "--buildpkg", "--usepkg", "--getbinpkg",
                       "--usepkg-exclude={cp}", "={cpv}"],
        pkgdir=str(tmp_path / "sb" / "var" / "cache" / "binpkgs"),
    )
    fake_swarmd.add_job("swarm-demo/libgreet-1.0", use=["unicode"])
    fake_swarmd.add_job("swarm-demo/libgreet-1.0", use=[])  # rebuilt, but asked without unicode
    fake_swarmd.add_job("swarm-demo/hello-1.0", use=None)  # would compile buildtool
    agent = Agent(cfg, identity=IDENTITY)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(agent.run)
            await fake_swarmd.wait_for(lambda: len(fake_swarmd.completes) == 3)
            agent.stop()

    target = fake_swarmd.registrations[0]["target"]
    assert target["arch"] == "amd64"
    assert target["profile"] == "default"
    assert list(target["repos"]) == ["swarm-demo"]

    (b1, ok), (b2, mismatch), (_b3, refused) = fake_swarmd.completes
    assert ok["result"] == "success", ok["error"]
    relpath = ok["artifact"]["path"]
    assert relpath == f"swarm-demo/libgreet/libgreet-1.0-1.gpkg.tar.{b1}.upload"
    data = (tmp_path / "binhost" / relpath).read_bytes()
    assert ok["artifact"]["sha256"] == hashlib.sha256(data).hexdigest()
    assert data == (tmp_path / "sb/var/cache/binpkgs/swarm-demo/libgreet/"
                    "libgreet-1.0-1.gpkg.tar").read_bytes()

    # The second build is BUILD_ID 2 (the probe picked it, not the older file) and is not synced.
    assert mismatch["result"] == "failed"
    assert mismatch["error"] == "use_mismatch: built with [unicode], lease asked []"
    assert "BUILD_ID 2" in bytes(fake_swarmd.logs[b2]).decode()
    assert sorted(p.name for p in (tmp_path / "binhost").rglob("*.upload")) == [
        Path(relpath).name]

    assert refused["result"] == "returned"
    assert refused["unbuildable"] is True
    assert refused["error"] == "plan: would compile swarm-demo/buildtool-1.0 from source"
    assert not (tmp_path / "sb/var/db/pkg/swarm-demo/hello-1.0").exists()
