"""The one cattrs converter: JSON <-> models, at the edges only."""

from __future__ import annotations

from typing import Any, TypeVar

import cattrs

from swarmlib.errors import BadRequest

T = TypeVar("T")

_converter = cattrs.Converter(forbid_extra_keys=False)


def structure(data: Any, cls: type[T]) -> T:
    """Turn decoded JSON into a model; a bad shape becomes a BadRequest naming the fields."""
    if not isinstance(data, dict):
        raise BadRequest(f"expected a JSON object, got {type(data).__name__}")
    try:
        return _converter.structure(data, cls)
    except cattrs.ClassValidationError as exc:
        msgs = cattrs.transform_error(exc, path="body")
        raise BadRequest("; ".join(msgs)) from None
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"body: {exc}") from None


def unstructure(obj: Any) -> Any:
    return _converter.unstructure(obj)
