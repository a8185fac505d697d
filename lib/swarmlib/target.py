"""The build environment a binary package is made for: its *target* (SPEC section 12).

Three rules make a binary fit a machine: the same build environment, the same ebuild, the same
USE flags. The target covers the first two: ``arch``, ``chost``, ``cflags``, ``cxxflags``,
``ldflags``, ``profile`` (make.profile relative to its repository's ``profiles/``),
``accept_keywords``, ``binpkg_format`` and ``repos`` (``{name: snapshot}``: the git HEAD of a
git checkout, else ``metadata/timestamp.chk``, else a digest of the tree that is equal for
equal trees). ``target_id`` is a short digest of the normalized target; swarmd leases a
request's packages only to drones whose ``target_id`` is the request's.

Portage reads its configuration once per process, from the environment at import
(``PORTAGE_CONFIGROOT``, ``ROOT``, ``PORTAGE_OVERRIDE_EPREFIX``). A drone's ``build_env`` may
name another configuration than the agent's own, so ``read_target`` always runs the reading in
a child process (``python -m swarmlib.target``) with that environment; it prints the target as
JSON.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from swarmlib.errors import ConfigError

FIELDS = ("arch", "chost", "cflags", "cxxflags", "ldflags", "profile", "accept_keywords",
          "binpkg_format")
_SPACED = frozenset({"cflags", "cxxflags", "ldflags"})
MAX_FIELD = 4096
MAX_REPOS = 256


def normalize(target: Any) -> dict[str, Any]:
    """A target received over the wire, checked and in canonical form.

    Raises ValueError naming the field that is wrong. Whitespace inside flags is collapsed and
    ``accept_keywords`` is sorted, so that equal environments give equal ids.
    """
    if not isinstance(target, dict):
        raise ValueError("target: expected a JSON object")
    unknown = set(target) - {*FIELDS, "repos"}
    if unknown:
        raise ValueError(f"target: unknown field(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for f in FIELDS:
        v = target.get(f, "")
        if v is None:
            v = ""
        if not isinstance(v, str) or len(v) > MAX_FIELD:
            raise ValueError(f"target.{f}: expected a string of at most {MAX_FIELD} characters")
        if f == "accept_keywords":
            v = " ".join(sorted(set(v.split())))
        elif f in _SPACED:
            v = " ".join(v.split())
        else:
            v = v.strip()
        out[f] = v
    repos = target.get("repos", {})
    if repos is None:
        repos = {}
    if not isinstance(repos, dict) or len(repos) > MAX_REPOS:
        raise ValueError("target.repos: expected an object {repository name: snapshot}")
    clean: dict[str, str] = {}
    for name, snap in repos.items():
        if not isinstance(name, str) or not name or not isinstance(snap, str) or len(snap) > 256:
            raise ValueError(f"target.repos[{name!r}]: expected a name and a snapshot string")
        clean[name] = snap.strip()
    out["repos"] = dict(sorted(clean.items()))
    return out


def target_id(target: Mapping[str, Any]) -> str:
    """Short digest (16 hex digits) of the normalized target."""
    canon = json.dumps(normalize(dict(target)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canon.encode()).hexdigest()[:16]


def describe(target: Mapping[str, Any]) -> str:
    """One line for logs and the CLI: ``amd64 x86_64-pc-linux-gnu default/linux/amd64/23.0``."""
    return " ".join(str(target.get(k) or "?") for k in ("arch", "chost", "profile"))


# ---- reading (in the child process) -------------------------------------------------------

def repo_snapshot(location: Path) -> str:
    """What identifies the tree: git HEAD, else metadata/timestamp.chk, else a content digest."""
    git = location / ".git"
    if git.exists():
        try:
            out = subprocess.run(["git", "-C", str(location), "rev-parse", "HEAD"],
                                 capture_output=True, text=True, timeout=30, check=False)
            if out.returncode == 0 and out.stdout.strip():
                return "git:" + out.stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            pass
    stamp = location / "metadata" / "timestamp.chk"
    try:
        text = stamp.read_text(encoding="utf-8", errors="replace").strip()
        if text:
            return "timestamp:" + text
    except OSError:
        pass
    return "tree:" + tree_digest(location)


def tree_digest(location: Path) -> str:
    """sha256 over every file's relative path and content (``.git`` and caches left out)."""
    h = hashlib.sha256()
    skip = {".git", "distfiles", "packages", ".cache"}
    for root, dirs, files in os.walk(location):
        dirs[:] = sorted(d for d in dirs if d not in skip)
        rel = os.path.relpath(root, location)
        if rel.startswith(os.path.join("metadata", "md5-cache")):
            continue
        for name in sorted(files):
            p = os.path.join(root, name)
            h.update(os.path.join(rel, name).encode() + b"\0")
            try:
                with open(p, "rb") as fh:
                    while chunk := fh.read(1 << 20):
                        h.update(chunk)
            except OSError:
                h.update(b"<unreadable>")
            h.update(b"\0")
    return h.hexdigest()[:16]


def read_here() -> dict[str, Any]:
    """The target of this process's portage configuration (imports portage: run in a child)."""
    import portage

    settings = portage.settings
    profile = ""
    profile_path = os.path.realpath(settings.profile_path) if settings.profile_path else ""
    repos: dict[str, str] = {}
    for repo in settings.repositories:
        loc = os.path.realpath(repo.location)
        repos[repo.name] = repo_snapshot(Path(loc))
        base = os.path.join(loc, "profiles") + os.sep
        if profile_path.startswith(base):
            profile = profile_path[len(base):]
    if profile_path and not profile:
        profile = profile_path
    target = {
        "arch": settings.get("ARCH", ""),
        "chost": settings.get("CHOST", ""),
        "cflags": settings.get("CFLAGS", ""),
        "cxxflags": settings.get("CXXFLAGS", ""),
        "ldflags": settings.get("LDFLAGS", ""),
        "profile": profile,
        "accept_keywords": settings.get("ACCEPT_KEYWORDS", ""),
        "binpkg_format": settings.get("BINPKG_FORMAT", ""),
        "repos": repos,
    }
    return normalize(target)


def read_target(env: Mapping[str, str] | None = None, *, timeout: float = 60.0) -> dict[str, Any]:
    """The target of the portage configuration that ``env`` (over this environment) selects.

    Blocking (a child process, about half a second); run it in a thread from async code.
    Raises ConfigError with one line when portage cannot read the configuration.
    """
    child_env = {**os.environ, **(env or {})}
    try:
        out = subprocess.run([sys.executable, "-m", "swarmlib.target"], env=child_env,
                             capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"reading the portage target took longer than {timeout:.0f} s") from None
    except OSError as exc:
        raise ConfigError(f"cannot run {sys.executable} to read the portage target: {exc}") from None
    if out.returncode != 0:
        lines = [ln for ln in out.stderr.strip().splitlines() if ln.strip()]
        why = lines[-1] if lines else f"exit code {out.returncode}"
        raise ConfigError(f"cannot read the portage target: {why}")
    try:
        return normalize(json.loads(out.stdout.strip().splitlines()[-1]))
    except (ValueError, IndexError) as exc:
        raise ConfigError(f"cannot read the portage target: unexpected output ({exc})") from None


def main() -> int:
    import warnings

    warnings.simplefilter("ignore")
    try:
        target = read_here()
    except Exception as exc:  # the parent turns the last stderr line into one clear error
        print(f"{type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    if not target["arch"] or not target["chost"]:
        print("portage has no ARCH/CHOST here: is make.profile set "
              "(PORTAGE_CONFIGROOT / PORTAGE_OVERRIDE_EPREFIX)?", file=sys.stderr)
        return 1
    print(json.dumps(target))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
