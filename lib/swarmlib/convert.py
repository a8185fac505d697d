"""The one cattrs converter: JSON <-> models, at the edges only.

Primitives are strict: a string field takes only a string (cattrs' default would turn ``5``
into ``"5"``), an int only an int (not a bool, not ``2.5``), a float an int or a float, a bool
only a bool. So a record or a body with a wrong type is refused with the field's name instead
of being coerced into something nobody wrote.
"""

from __future__ import annotations

import enum
from typing import Any, TypeVar

import cattrs
import cattrs.v
from cattrs.gen import make_dict_structure_fn

from swarmlib.errors import BadRequest

T = TypeVar("T")


class _WrongType(ValueError):
    pass


def _str(v: Any, t: Any) -> str:
    if t is not str and _is_enum(t):  # a StrEnum: str's hook is found first
        out: str = _enum(v, t)
        return out
    if isinstance(v, str):
        return v
    raise _WrongType(f"expected a string, got {type(v).__name__}")


def _int(v: Any, _t: Any) -> int:
    if isinstance(v, int) and not isinstance(v, bool):
        return v
    raise _WrongType(f"expected an integer, got {v!r}")


def _float(v: Any, _t: Any) -> float:
    if isinstance(v, int | float) and not isinstance(v, bool):
        return float(v)
    raise _WrongType(f"expected a number, got {v!r}")


def _bool(v: Any, _t: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise _WrongType(f"expected true or false, got {v!r}")


def _is_enum(t: Any) -> bool:
    return isinstance(t, type) and issubclass(t, enum.Enum)


def _enum(v: Any, t: Any) -> Any:
    try:
        return t(v)
    except ValueError:
        raise _WrongType(f"expected one of {', '.join(repr(m.value) for m in t)}, "
                         f"got {v!r}") from None


def _make(detailed: bool) -> cattrs.Converter:
    c = cattrs.Converter(forbid_extra_keys=False, detailed_validation=detailed)
    c.register_structure_hook_func(_is_enum, _enum)
    c.register_structure_hook(str, _str)
    c.register_structure_hook(int, _int)
    c.register_structure_hook(float, _float)
    c.register_structure_hook(bool, _bool)
    return c


# Two converters with the same rules: ``_fast`` (no per-field bookkeeping) structures the
# journal's records at replay; only when it fails does ``_converter`` run again to say which
# field is wrong and why.
_converter = _make(detailed=True)
_fast = _make(detailed=False)


def _format(exc: BaseException, type_: Any) -> str:
    if isinstance(exc, _WrongType):
        return str(exc)
    return cattrs.v.format_exception(exc, type_)


class StructureError(ValueError):
    """Data that does not fit its model. ``field``: the first offending top-level field
    ("" when the whole object is wrong, e.g. an unknown key); ``why``: every problem, each
    with its path."""

    def __init__(self, field: str, why: str) -> None:
        self.field = field
        self.why = why
        super().__init__(why)


def forbid_extra_keys(cls: type) -> None:
    """Structure ``cls`` refusing keys it has no field for (a typo is an error)."""
    for c in (_converter, _fast):
        c.register_structure_hook(
            cls, make_dict_structure_fn(cls, c, _cattrs_forbid_extra_keys=True))


def structure_strict(data: Any, cls: type[T], path: str = "$") -> T:
    """Turn decoded JSON into ``cls``; raises StructureError naming the field."""
    try:
        return _fast.structure(data, cls)
    except Exception:  # noqa: BLE001 - any failure: the detailed converter explains it
        pass
    try:
        return _converter.structure(data, cls)
    except cattrs.ClassValidationError as exc:
        field = ""
        for sub in exc.exceptions:
            for note in getattr(sub, "__notes__", []):
                name = getattr(note, "name", None)
                if isinstance(name, str):
                    field = name
                    break
            if field:
                break
            extra = getattr(sub, "extra_fields", None)
            if extra:
                field = sorted(extra)[0]
                break
        msgs = cattrs.transform_error(exc, path=path, format_exception=_format)
        raise StructureError(field, "; ".join(msgs)) from None
    except (TypeError, ValueError) as exc:
        raise StructureError("", f"{path}: {exc}") from None


def structure(data: Any, cls: type[T]) -> T:
    """Turn a request body into a model; a bad shape becomes a BadRequest naming the fields."""
    if not isinstance(data, dict):
        raise BadRequest(f"expected a JSON object, got {type(data).__name__}")
    try:
        return structure_strict(data, cls, path="body")
    except StructureError as exc:
        raise BadRequest(exc.why) from None


def unstructure(obj: Any) -> Any:
    return _converter.unstructure(obj)
