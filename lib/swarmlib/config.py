"""Configuration for every daemon: TOML file, environment, flags (in rising precedence).

A daemon describes its keys as an attrs class whose fields carry metadata:
``help`` (the flag's help text) and ``secret`` (True for keys that may come only from the
environment or from a ``<key>_file`` entry of the TOML file, never from a flag).

``load(cls, prog, env_prefix, argv)`` returns an instance. Every key ``some_key`` is settable as
``some_key`` in the file, ``--some-key`` on the command line and ``PREFIX_SOME_KEY`` in the
environment. ``--config PATH`` names the file; the default ``/etc/build-swarm/<prog>.toml`` may be
missing, a named file may not. Any problem raises ConfigError with one line that says what to fix.
"""

from __future__ import annotations

import argparse
import os
import tomllib
import types
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

import attrs

from swarmlib.errors import ConfigError

C = TypeVar("C")

DEFAULT_DIR = Path("/etc/build-swarm")


def secret_field(*, env: str, help: str) -> Any:
    """A secret: only from the named environment variable or a ``*_file`` key."""
    return attrs.field(default="", repr=False, metadata={"secret": True, "env": env, "help": help})


def key(default: Any, help: str, **kw: Any) -> Any:
    if isinstance(default, list | dict):
        frozen_default = default

        def _copy() -> Any:
            return type(frozen_default)(frozen_default)

        return attrs.field(factory=_copy, metadata={"help": help}, **kw)
    return attrs.field(default=default, metadata={"help": help}, **kw)


def _field_types(cls: type[Any]) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _base(tp: Any) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return _base(args[0])
    return tp


def _coerce(name: str, tp: Any, value: Any, source: str) -> Any:
    base = _base(tp)
    origin = typing.get_origin(base)
    try:
        if base is bool:
            if isinstance(value, bool):
                return value
            s = str(value).strip().lower()
            if s in ("1", "true", "yes", "on"):
                return True
            if s in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"expected true or false, got {value!r}")
        if base is int:
            if isinstance(value, bool):
                raise ValueError("expected an integer")
            return int(value)
        if base is float:
            if isinstance(value, bool):
                raise ValueError("expected a number")
            return float(value)
        if base is str:
            if not isinstance(value, str | int | float):
                raise ValueError(f"expected a string, got {type(value).__name__}")
            return str(value)
        if origin is list:
            if isinstance(value, str):
                import shlex

                return shlex.split(value)
            if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
                raise ValueError("expected a list of strings")
            return list(value)
        if origin is dict or base is dict:
            if not isinstance(value, dict):
                raise ValueError("expected a table")
            return dict(value)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{source}: key '{name}': {exc}") from None
    return value


def load(
    cls: type[C],
    prog: str,
    env_prefix: str,
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    description: str = "",
) -> C:
    environ = os.environ if environ is None else environ
    fields = attrs.fields(cls)  # type: ignore[arg-type]
    hints = _field_types(cls)
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", help=f"TOML file (default {DEFAULT_DIR}/{prog}.toml)")
    for f in fields:
        if f.metadata.get("secret"):
            continue
        flag = "--" + f.name.replace("_", "-")
        base = _base(hints[f.name])
        if typing.get_origin(base) is dict or base is dict:
            continue  # tables only from the file
        default = f.default.factory() if hasattr(f.default, "factory") else f.default
        parser.add_argument(
            flag,
            dest=f.name,
            default=None,
            help=f"{f.metadata.get('help', '')} (default: {default!r}; env {env_prefix}_{f.name.upper()})",
        )
    try:
        ns = parser.parse_args(list(argv) if argv is not None else None)
    except SystemExit as exc:
        if exc.code == 0:
            raise
        raise ConfigError("bad command line (see --help)") from None

    values: dict[str, Any] = {}
    file_data: dict[str, Any] = {}
    path = ns.config or environ.get(f"{env_prefix}_CONFIG")
    if path:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"config file {p} does not exist")
        file_data = _read_toml(p)
    else:
        p = DEFAULT_DIR / f"{prog}.toml"
        if p.is_file():
            file_data = _read_toml(p)
        path = str(p)

    known = {f.name for f in fields if not f.metadata.get("secret")}
    secret_names = {f.name for f in fields if f.metadata.get("secret")}
    secret_files = {f"{n}_file" for n in secret_names}
    for k in file_data:
        if k in secret_names:
            env_name = next(f.metadata["env"] for f in fields if f.name == k)
            raise ConfigError(f"{path}: secret '{k}' must not be written in the config file; "
                              f"use '{k}_file' (a file only the service can read) or {env_name}")
        if k not in known and k not in secret_files:
            raise ConfigError(f"{path}: unknown key '{k}' (known: {', '.join(sorted(known))})")

    for f in fields:
        tp = hints[f.name]
        if f.metadata.get("secret"):
            env_name = f.metadata["env"]
            if env_name in environ and environ[env_name]:
                values[f.name] = environ[env_name]
            elif f"{f.name}_file" in file_data:
                sp = Path(str(file_data[f"{f.name}_file"]))
                try:
                    values[f.name] = sp.read_text().strip()
                except OSError as exc:
                    raise ConfigError(f"{path}: {f.name}_file {sp}: {exc.strerror}") from None
            continue
        if f.name in file_data:
            values[f.name] = _coerce(f.name, tp, file_data[f.name], path)
        env_name = f"{env_prefix}_{f.name.upper()}"
        if env_name in environ:
            values[f.name] = _coerce(f.name, tp, environ[env_name], f"environment {env_name}")
        flag_value = getattr(ns, f.name, None)
        if flag_value is not None:
            values[f.name] = _coerce(f.name, tp, flag_value, "--" + f.name.replace("_", "-"))
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise ConfigError(str(exc)) from None


def _read_toml(p: Path) -> dict[str, Any]:
    try:
        with p.open("rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"config file {p}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: {exc}") from None


def redacted(cfg: Any) -> dict[str, Any]:
    """The effective configuration with secrets shown only as set / not set."""
    out: dict[str, Any] = {}
    for f in attrs.fields(type(cfg)):
        v = getattr(cfg, f.name)
        if f.metadata.get("secret"):
            out[f.name] = "<set>" if v else "<not set>"
        else:
            out[f.name] = v
    return out


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not port.isdigit() or not (0 <= int(port) <= 65535):
        raise ConfigError(f"{what}: expected HOST:PORT, got {value!r}")
    return host.strip("[]") or "127.0.0.1", int(port)
