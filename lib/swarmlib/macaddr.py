"""MAC addresses in any common form, stored as ``aa:bb:cc:dd:ee:ff``."""

from __future__ import annotations

import re

from swarmlib.errors import BadRequest

_HEX = re.compile(r"[0-9a-fA-F]")


def normalize_mac(value: str) -> str:
    """``aa:bb:..``, ``aa-bb-..``, ``aabb.ccdd.eeff`` or bare ``aabbccddeeff``; "" stays ""."""
    if not value:
        return ""
    digits = re.sub(r"[:\-.\s]", "", value)
    if len(digits) != 12 or not all(_HEX.fullmatch(c) for c in digits):
        raise BadRequest(f"body.mac: {value!r} is not a MAC address")
    d = digits.lower()
    return ":".join(d[i:i + 2] for i in range(0, 12, 2))
