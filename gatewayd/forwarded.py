"""Which client a request came from, when a reverse proxy stands in front of the gateway.

Pure (no trio, no Quart). The TCP peer is the client unless it is one of the configured
``trusted_proxies``; only then is the one header those proxies write read:
``trusted_proxy_header``, ``X-Forwarded-For`` (the default) or ``Forwarded`` (RFC 7239).
The other header is ignored entirely: a proxy that appends to one passes the other through as
the client wrote it, so believing it (or letting it veto the real one) would hand the client a
say in which address its failures are counted under. Each proxy appends the address it saw, so
the list reads client, proxy1, proxy2, ... and only its right end is vouched for: the client is
the rightmost hop that is not itself a trusted proxy. Anything to the left of that hop was
written by the client and may be forged. A hop that is not an address (``unknown``, an
obfuscated ``_name``, garbage) stops the walk and the trusted proxy that reported it is taken as
the client: such requests share the proxy's lockout rather than escape it. That can only happen
when the proxy itself writes such a hop, never by a header the client adds.

Addresses are returned normalized (``str(ipaddress.ip_address(...))``, IPv4-mapped IPv6 as
IPv4), so one client is always one key of the admin lockout.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

import attrs

from swarmlib.errors import ConfigError

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_node(node: str) -> Address | None:
    """The address of an RFC 7239 node (``192.0.2.1``, ``192.0.2.1:80``, ``[2001:db8::1]:80``,
    a bare IPv6 address as X-Forwarded-For writes it); None for ``unknown``, ``_obfuscated``
    and anything else that is not an address."""
    node = node.strip()
    if node.startswith("["):
        end = node.find("]")
        if end < 0 or (node[end + 1:] and not node[end + 1:].startswith(":")):
            return None
        host = node[1:end]
    elif node.count(":") == 1:
        host = node.split(":", 1)[0]
    else:
        host = node
    try:
        addr = ipaddress.ip_address(host)
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _split_outside_quotes(text: str, sep: str) -> list[str]:
    parts: list[str] = []
    cur: list[str] = []
    quoted = escaped = False
    for ch in text:
        if escaped:
            cur.append(ch)
            escaped = False
        elif quoted and ch == "\\":
            cur.append(ch)
            escaped = True
        elif ch == '"':
            cur.append(ch)
            quoted = not quoted
        elif ch == sep and not quoted:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return parts


def _unquote(value: str) -> str:
    value = value.strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        out: list[str] = []
        chars = iter(value[1:-1])
        for ch in chars:
            out.append(next(chars, "") if ch == "\\" else ch)
        return "".join(out)
    return value


def forwarded_for(headers: Iterable[str]) -> list[str]:
    """The ``for=`` node of every element of the ``Forwarded`` header lines, in order (an
    element without ``for=`` gives ``""``: a hop whose address is unknown)."""
    hops: list[str] = []
    for line in headers:
        for element in _split_outside_quotes(line, ","):
            if not element.strip():
                continue
            node = ""
            for pair in _split_outside_quotes(element, ";"):
                name, eq, value = pair.partition("=")
                if eq and name.strip().lower() == "for":
                    node = _unquote(value)
            hops.append(node)
    return hops


def _x_forwarded_for(headers: Iterable[str]) -> list[str]:
    return [h.strip() for line in headers for h in line.split(",") if h.strip()]


HEADERS = ("x-forwarded-for", "forwarded")


@attrs.frozen
class TrustedProxies:
    """The ``trusted_proxies`` of the configuration, as networks, and the one header they write
    (``trusted_proxy_header``, lower case). No networks: trust no header."""

    networks: tuple[Network, ...] = ()
    header: str = HEADERS[0]

    @classmethod
    def parse(cls, values: Sequence[str], *, header: str = HEADERS[0]) -> TrustedProxies:
        """Addresses or networks, each item possibly a comma-separated list (as an environment
        variable or a flag gives them), and the header name (any case). A bad value raises
        ConfigError naming it."""
        name = header.strip().lower()
        if name not in HEADERS:
            raise ConfigError(
                f"trusted_proxy_header: expected 'x-forwarded-for' or 'forwarded' (the one "
                f"header the trusted proxies write), got {header!r}"
            )
        nets: list[Network] = []
        for value in values:
            for item in value.split(","):
                item = item.strip()
                if not item:
                    continue
                try:
                    nets.append(ipaddress.ip_network(item, strict=False))
                except ValueError:
                    raise ConfigError(
                        f"trusted_proxies: {item!r} is not an IP address or network "
                        "(for example 10.0.0.2 or 10.0.0.0/24)"
                    ) from None
        return cls(tuple(nets), name)

    def trusts(self, addr: str | Address) -> bool:
        a = parse_node(addr) if isinstance(addr, str) else addr
        return a is not None and any(a in net for net in self.networks)

    def client(self, peer: str, *, forwarded: Sequence[str],
               x_forwarded_for: Sequence[str]) -> str:
        """The client address of a request from ``peer`` with these header lines (only the
        configured header's lines are read)."""
        peer_addr = parse_node(peer)
        if peer_addr is None or not self.trusts(peer_addr):
            return str(peer_addr) if peer_addr is not None else peer
        if self.header == "forwarded":
            hops = forwarded_for(forwarded)
        else:
            hops = _x_forwarded_for(x_forwarded_for)
        return self._walk(peer_addr, hops)

    def _walk(self, peer: Address, hops: Sequence[str]) -> str:
        nearest = peer  # the closest hop known to be a trusted proxy
        for node in reversed(hops):
            addr = parse_node(node)
            if addr is None:
                return str(nearest)
            if not self.trusts(addr):
                return str(addr)
            nearest = addr
        return str(nearest)
