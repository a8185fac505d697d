"""Which binary package did this build produce, and with which USE? Asked of portage itself.

    python -m droned.portage_probe built =CPV

prints one JSON line ``{"cpv", "build_id", "path", "use": [...], "iuse": [...]}`` and exits 0,
or prints one line on stderr and exits 1. Run it as a child process with the drone's
``build_env``: portage reads its configuration (``PORTAGE_CONFIGROOT``, ``ROOT``,
``PORTAGE_OVERRIDE_EPREFIX``) once, at import, so the agent process cannot switch to it.

How the file is found: emerge ``--buildpkg`` installs the package and records the binary's
``BUILD_ID`` in the installed-package database (vartree); the file in PKGDIR of that CPV with
the same ``BUILD_ID`` (bintree) is the one this build wrote, whatever else PKGDIR holds (older
builds, binaries fetched from the binhost). Its USE and IUSE are then read from the file's own
metadata, not from an index.

``use_mismatch`` (pure, imported by the agent) compares the USE a package was built with to
the USE the lease asked for. A binary package's USE holds the enabled flags that are in IUSE
(plus implicit ones such as the arch); the lease's list comes from ``emerge -pv`` and may name
flags of USE_EXPAND groups. Both sides are cut down to the package's IUSE before comparing, so
arch and other implicit flags never count. ``emerge -pv`` does not show the USE_EXPAND_HIDDEN
groups (ELIBC, KERNEL, ...), so a lease never names ``elibc_glibc`` even when the package has it
in IUSE and it is on: flags of those groups (``hidden``, reported by the probe from the drone's
portage settings) are left out of both sides.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class ProbeError(Exception):
    """The package database or PKGDIR does not hold what the build should have left."""


def iuse_names(iuse: Iterable[str]) -> set[str]:
    """IUSE entries without their default markers (``+unicode`` -> ``unicode``)."""
    return {f.lstrip("+-") for f in iuse if f.lstrip("+-")}


def enabled_in_iuse(use: Iterable[str], iuse: Iterable[str]) -> list[str]:
    names = iuse_names(iuse)
    return sorted({f for f in use if f and not f.startswith("-") and f in names})


def use_mismatch(built_use: Iterable[str], iuse: Iterable[str],
                 lease_use: Iterable[str] | None, hidden: Iterable[str] = ()) -> str | None:
    """None when the enabled flags agree within IUSE (or the lease did not say); else the error.

    ``hidden``: USE_EXPAND_HIDDEN group names (``ELIBC``, ``KERNEL``): their flags are left out.
    """
    if lease_use is None:
        return None
    prefixes = tuple(f"{h.lower()}_" for h in hidden if h)

    def shown(flags: list[str]) -> list[str]:
        return [f for f in flags if not (prefixes and f.startswith(prefixes))]

    built = shown(enabled_in_iuse(built_use, iuse))
    asked = shown(enabled_in_iuse(lease_use, iuse))
    if built == asked:
        return None
    return f"use_mismatch: built with [{' '.join(built)}], lease asked [{' '.join(asked)}]"


# ---- in the child process (imports portage) ------------------------------------------------

def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value or "")


def file_metadata(path: str, keys: list[str]) -> dict[str, str]:
    """Metadata keys read from a binary package file itself (gpkg or xpak)."""
    from portage import binpkg, gpkg, settings, xpak

    fmt = binpkg.get_binpkg_format(path)
    if fmt == "gpkg":
        md = gpkg.gpkg(settings, None, path, verify_signature=False).get_metadata(want=keys)
        return {k: _text(md.get(k)).strip() for k in keys}
    if fmt == "xpak":
        pkg = xpak.tbz2(path)
        return {k: _text(pkg.getfile(k)).strip() for k in keys}
    raise ProbeError(f"{path}: not a binary package portage knows ({fmt!r})")


def built(cpv: str) -> dict[str, Any]:
    """The binary package the last build of ``cpv`` produced (see the module docstring)."""
    import portage

    cpv = cpv.lstrip("=")
    trees = portage.db[portage.root]
    vardb = trees["vartree"].dbapi
    if not vardb.match(f"={cpv}"):
        raise ProbeError(f"{cpv} is not installed in {portage.root}: the build did not merge it "
                         "(emerge --buildpkg installs it and records its BUILD_ID)")
    (build_id,) = vardb.aux_get(cpv, ["BUILD_ID"])
    if not build_id:
        raise ProbeError(f"the package database records no BUILD_ID for {cpv} "
                         "(was it built with --buildpkg / FEATURES=buildpkg?)")
    bintree = trees["bintree"]
    bintree.populate()
    path = None
    for inst in bintree.dbapi.match(f"={cpv}"):
        (bid,) = bintree.dbapi.aux_get(inst, ["BUILD_ID"])
        if bid == build_id:
            path = bintree.getname(inst)
            break
    if path is None or not Path(path).is_file():
        raise ProbeError(f"no binary package of {cpv} with BUILD_ID {build_id} in "
                         f"{portage.settings['PKGDIR']}")
    md = file_metadata(path, ["BUILD_ID", "USE", "IUSE"])
    if md["BUILD_ID"] and md["BUILD_ID"] != build_id:
        raise ProbeError(f"{path} says BUILD_ID {md['BUILD_ID']}, the database {build_id}")
    return {
        "cpv": cpv,
        "build_id": build_id,
        "path": str(path),
        "use": md["USE"].split(),
        "iuse": md["IUSE"].split(),
        "hidden": portage.settings.get("USE_EXPAND_HIDDEN", "").split(),
    }


def main(argv: list[str] | None = None) -> int:
    import warnings

    warnings.simplefilter("ignore")
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2 or args[0] != "built":
        print("usage: python -m droned.portage_probe built =CPV", file=sys.stderr)
        return 2
    try:
        result = built(args[1])
    except ProbeError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    except Exception as exc:  # the agent reports the last stderr line; keep it one line
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
