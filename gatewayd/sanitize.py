"""The Galactic Identity System (SPEC section 7): what the public may see of the swarm.

Plain Python: no trio, no I/O. Theory of operation:

1. Allowlist. Every public payload is *built* field by field from swarmd's JSON (``build_swarm``,
   ``build_history``, ``infrastructure``, ``queue``, ``discovery``, ``public_event``); a field
   that is not named here never reaches the public. Enumerated fields (status, state, result,
   phase) keep only known words; numbers must be numbers; timestamps must look like timestamps.
2. Scan. Every string of the built payload then goes through ``text()``, in this order:
   configured secrets, URL user info, ``password=...``-style values and bearer tokens are
   redacted; MACs (``aa:bb:..``, ``aa-bb-..``, ``aabb.ccdd.eeff``) and any run of 12 or more
   hex digits (bare MACs, hashes) are redacted; IPv6 and IPv4 addresses (also zero-padded, in
   URLs, with ports) are mapped by ``identity.networks`` keeping the host part, or, when private
   and unknown, replaced by a stable alias ``ip-XXXXXXXXXX``; known host names (full and short,
   case-insensitive, also inside longer names) become their alias; host names learned from
   swarmd's own data (``hostname`` fields, drone addresses) and names under internal domains
   (``.lan``, ``.local``, ``.internal``, ...) become a stable alias ``host-XXXXXXXXXX``; long
   mixed-case strings with digits (tokens) are redacted.
3. Check. ``check()`` walks the finished payload once more and raises ``LeakRefused`` if a
   known real name, a learned host name, a configured secret, a MAC, a long hex run or a
   private address still appears. The caller sends an error instead of the payload.

Aliases are HMAC-SHA256 of the canonical input under the alias key, written with the letters
``ghjkmnpqrstvwxyz`` (never a hex digit, so an alias can never complete a MAC or a hash).
Loopback and unspecified addresses are not secrets and are kept.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any

from swarmlib.counts import count_states, public_counts
from swarmlib.errors import SwarmError
from swarmlib.timefmt import iso, utc_now_iso

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

REDACTED = "[redacted]"
_ALIAS_ALPHABET = "ghjkmnpqrstvwxyz"
_ALIAS_LEN = 10
_MAX_STRING = 512
_MAX_INPUT = 4096
# Our own words: a learned or mapped "real name" inside them is not a leak (and is not learned).
_RESERVED_TEXT = "host- orch- ip- [redacted] orchestrator drone unknown gateway"
_MAX_LEARNED = 10_000
# Results of ``text()`` and of the leak check per string, kept while what the sanitizer knows
# (learned names and addresses) is unchanged: swarmd's data repeats from one fetch to the next
# (20,000 queued package names every 10 s cost ~0.5 s of regexes each time without it).
_MEMO_MAX = 200_000
_MIN_LEARNED_LEN = 3

DRONE_STATES = ("ready", "building", "degraded", "offline")
ENTRY_STATES = ("pending", "ready", "assigned", "building", "built", "failed", "blocked",
                "cancelled")
QUEUED_STATES = ("pending", "ready", "assigned", "building")
RESULTS = ("success", "failed", "returned", "revoked", "cancelled")
PHASES = ("started", "progress", "finished")
PUBLIC_TYPES = ("drone_status", "build_progress", "queue_update", "build_complete")
REQUEST_STATES = ("open", "complete")
# The requests route lists every open request up to this many, then the latest finished ones.
MAX_OPEN_REQUESTS = 50
MAX_FINISHED_REQUESTS = 10
# Whole strings that are public vocabulary: never rewritten, never a leak by themselves.
_VOCABULARY = frozenset(
    DRONE_STATES + ENTRY_STATES + RESULTS + PHASES + PUBLIC_TYPES
    + ("up", "down", "ok", "degraded", "error", "unknown")
)

# Private-use space that ipaddress does not call private (carrier-grade NAT, Tailscale).
_SHARED_V4 = ipaddress.ip_network("100.64.0.0/10")
# "This network": never a host's address, and what digits next to a mapped address look like.
_THIS_NET_V4 = ipaddress.ip_network("0.0.0.0/8")

_SECRET_LABELS = (
    r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key"
    r"|admin[_-]?key|auth(?:orization)?|credentials?|cookie|session|key"
)
_KV_SECRET_RE = re.compile(
    rf"(?i)(?<![a-z])({_SECRET_LABELS})(\s*[:=]\s*)(?:(?:bearer|basic|token)\s+)?"
    # The value ends at a separator, or where the next "label=" starts, so that one value
    # never swallows the label of the next secret.
    rf"(?:\"[^\"]*\"|'[^']*'|(?:(?!(?<![a-z])(?:{_SECRET_LABELS})\s*[:=])[^\s,;&\"'<>()\[\]{{}}])+)"
)
_BEARER_RE = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_USERINFO_RE = re.compile(r"(?i)([a-z][a-z0-9+.-]*://)[^\s/@?#]*@")
_MAC_RE = re.compile(
    r"[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{2}(?:-[0-9A-Fa-f]{2}){5}"
    r"|[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}\.[0-9A-Fa-f]{4}"
)
_HEX_RUN_RE = re.compile(r"[0-9A-Fa-f]{12,}")
_V6_RUN_RE = re.compile(r"[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*")
_V4_RUN_RE = re.compile(r"\d+(?:\.\d+){3,}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9_+=-]{20,}")
_INTERNAL_DOMAIN_RE = re.compile(
    r"(?i)[a-z0-9-]+(?:\.[a-z0-9-]+)*\.(?:lan|local|localdomain|internal|intranet|home|corp"
    r"|private|home\.arpa)(?![a-z0-9])"
)
_TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d)?$")


class LeakRefused(SwarmError):
    """A finished public payload still holds something secret: it must not be sent.

    ``where`` names the field (a path like ``data.drones[2].name``) and ``what`` the kind of
    leak; neither carries the secret itself, so both may be logged.
    """

    code = "sanitizer_refused"
    status = 500

    def __init__(self, where: str, what: str) -> None:
        self.where = where
        self.what = what
        super().__init__(f"public payload refused: {what} in {where}")


def _parse_v4(run: str) -> list[tuple[int, int, ipaddress.IPv4Address]]:
    """Every window of four dot-separated numbers in ``run`` that is an IPv4 address.

    Returns (start, end, address) spans, overlapping ones included (``1.10.42.0.201`` holds
    1.10.42.0 and 10.42.0.201). Zero-padded octets count (``010.042.000.001`` is 10.42.0.1).
    """
    parts = run.split(".")
    offsets = []
    pos = 0
    for p in parts:
        offsets.append(pos)
        pos += len(p) + 1
    spans: list[tuple[int, int, ipaddress.IPv4Address]] = []
    for i in range(len(parts) - 3):
        window = parts[i:i + 4]
        if all(p.isdigit() and int(p) <= 255 for p in window):
            addr = ipaddress.IPv4Address(".".join(str(int(p)) for p in window))
            spans.append((offsets[i], offsets[i + 3] + len(parts[i + 3]), addr))
    return spans


def _v6_candidate(run: str) -> bool:
    return "::" in run or run.count(":") >= 5


def _parse_v6(run: str) -> IPAddress | None:
    for cand in (run, run.rstrip("."), run.rstrip(":.")):
        try:
            return ipaddress.IPv6Address(cand)
        except ValueError:
            continue
    return None


class Sanitizer:
    """Turns swarmd's JSON into public payloads. Pure; keeps only a learned set of host names.

    ``hosts``: real host name -> public alias. ``networks``: real network -> public network of
    the same prefix length. ``alias_key``: the key of the stable aliases (keep it across
    restarts). ``secrets``: literal strings (configured tokens) that must never appear.
    """

    def __init__(
        self,
        hosts: Mapping[str, str],
        networks: Mapping[str, str],
        alias_key: bytes,
        *,
        secrets: Iterable[str] = (),
    ) -> None:
        if not alias_key:
            raise ValueError("alias_key must not be empty")
        self._alias_key = bytes(alias_key)
        self._host_alias: dict[str, str] = {}
        for real, alias in hosts.items():
            for name in {real.strip().lower(), real.strip().lower().split(".", 1)[0]}:
                if name:
                    self._host_alias.setdefault(name, alias)
        self._aliases_lower = [a.lower() for a in hosts.values()]
        self._host_re = self._names_re(self._host_alias)
        self._networks: list[tuple[IPNetwork, IPNetwork]] = []
        for real, public in networks.items():
            r = ipaddress.ip_network(real, strict=False)
            p = ipaddress.ip_network(public, strict=False)
            if r.version != p.version or r.prefixlen != p.prefixlen:
                raise ValueError(f"network {real} and {public} differ in version or prefix")
            self._networks.append((r, p))
        # Longest prefix first, so a /24 inside a mapped /16 wins.
        self._networks.sort(key=lambda rp: rp[0].prefixlen, reverse=True)
        self._public_nets = [p for _r, p in self._networks]
        self._secrets = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)
        self._learned: dict[str, None] = {}
        self._learned_re: re.Pattern[str] | None = None
        self._learned_addrs: dict[str, None] = {}
        self._memo_text: dict[str, str] = {}
        self._memo_clean: set[str] = set()
        # Identifiers the final check looks for: real names that are not part of an alias.
        self._check_names = [
            n for n in self._host_alias
            if not any(n in a for a in self._aliases_lower) and n not in _RESERVED_TEXT
        ]

    # -- aliases -------------------------------------------------------------------------------

    def _digest(self, kind: str, value: str) -> str:
        mac = hmac.new(self._alias_key, f"{kind}\0{value}".encode(), hashlib.sha256).digest()
        return "".join(_ALIAS_ALPHABET[b & 0x0F] for b in mac[:_ALIAS_LEN])

    def host_alias(self, name: str) -> str:
        """A host name's public name: its mapped alias, or ``host-XXXXXXXXXX`` (stable, keyed)."""
        low = name.strip().lower()
        if not low:
            return ""
        mapped = self._host_alias.get(low) or self._host_alias.get(low.split(".", 1)[0])
        if mapped is not None:
            return mapped
        return "host-" + self._digest("host", low)

    def address_alias(self, addr: IPAddress) -> str | None:
        """The public form of an address, or None when it is not a secret (shown as it is)."""
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            inner = self.address_alias(addr.ipv4_mapped)
            return inner if inner is not None else None
        for real, public in self._networks:
            if addr.version == real.version and addr in real:
                offset = int(addr) - int(real.network_address)
                return str(ipaddress.ip_address(int(public.network_address) + offset))
        if not self._is_secret_address(addr):
            return None
        return "ip-" + self._digest("ip", addr.compressed)

    def _is_secret_address(self, addr: IPAddress) -> bool:
        if addr.is_loopback or addr.is_unspecified:
            return False
        if isinstance(addr, ipaddress.IPv4Address) and addr in _THIS_NET_V4:
            return False
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return self._is_secret_address(addr.ipv4_mapped)
        if any(addr.version == p.version and addr in p for p in self._public_nets):
            return False
        if str(addr) in self._learned_addrs:
            return True
        if isinstance(addr, ipaddress.IPv4Address) and addr in _SHARED_V4:
            return True
        return bool(addr.is_private or addr.is_link_local or addr.is_reserved
                    or (isinstance(addr, ipaddress.IPv6Address) and addr.is_site_local))

    # -- learning ------------------------------------------------------------------------------

    def learn(self, *, hosts: Iterable[Any] = (), addresses: Iterable[Any] = ()) -> None:
        """Remember real host names and addresses seen in swarmd's data (bounded)."""
        changed = False
        for h in hosts:
            if not isinstance(h, str) or not h.strip():
                continue
            try:
                ipaddress.ip_address(h.strip().strip("[]"))
            except ValueError:
                pass
            else:
                addresses = [*addresses, h]
                continue
            for name in {h.strip().lower(), h.strip().lower().split(".", 1)[0]}:
                if self._learnable(name) and name not in self._learned:
                    self._learned[name] = None
                    changed = True
        for a in addresses:
            if not isinstance(a, str):
                continue
            try:
                addr = ipaddress.ip_address(a.strip().strip("[]"))
            except ValueError:
                if a.strip():
                    self.learn(hosts=[a])
                continue
            if not (addr.is_loopback or addr.is_unspecified) and \
                    str(addr) not in self._learned_addrs:
                self._learned_addrs[str(addr)] = None
                self._forget_memos()
        while len(self._learned) > _MAX_LEARNED:
            self._learned.pop(next(iter(self._learned)))
            changed = True
        while len(self._learned_addrs) > _MAX_LEARNED:
            self._learned_addrs.pop(next(iter(self._learned_addrs)))
        if changed:
            self._learned_re = self._names_re(self._learned)
            self._forget_memos()

    def _forget_memos(self) -> None:
        self._memo_text.clear()
        self._memo_clean.clear()

    def _learnable(self, name: str) -> bool:
        return (
            len(name) >= _MIN_LEARNED_LEN
            and any(c.isalpha() for c in name)
            and name not in _VOCABULARY
            and name not in _RESERVED_TEXT
            and not any(name in a for a in self._aliases_lower)
        )

    def learn_drones(self, doc: Any) -> None:
        """Learn from swarmd's ``GET /api/drones`` answer (or a single drone record)."""
        drones = doc.get("drones") if isinstance(doc, dict) and "drones" in doc else [doc]
        for d in drones if isinstance(drones, list) else []:
            if isinstance(d, dict):
                self.learn(hosts=[d.get("hostname")], addresses=[d.get("ip")])

    def learn_status(self, doc: Any) -> None:
        if isinstance(doc, dict):
            self.learn(hosts=[doc.get("hostname")])

    @staticmethod
    def _names_re(names: Iterable[str]) -> re.Pattern[str] | None:
        ordered = sorted(set(names), key=len, reverse=True)
        if not ordered:
            return None
        return re.compile("|".join(re.escape(n) for n in ordered), re.IGNORECASE)

    # -- scanning ------------------------------------------------------------------------------

    def text(self, s: str) -> str:
        """One string with every secret-looking part replaced or removed (idempotent enough to
        apply to already-public text)."""
        if s in _VOCABULARY:
            return s
        hit = self._memo_text.get(s)
        if hit is not None:
            return hit
        out = self._text(s)
        if len(self._memo_text) >= _MEMO_MAX:
            self._memo_text.clear()
        self._memo_text[s] = out
        return out

    def _text(self, s: str) -> str:
        for secret in self._secrets:
            if secret in s:
                s = s.replace(secret, REDACTED)
        s = _USERINFO_RE.sub(r"\1", s)
        s = _KV_SECRET_RE.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", s)
        s = _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", s)
        s = _MAC_RE.sub(REDACTED, s)
        s = _HEX_RUN_RE.sub(REDACTED, s)
        s = _V6_RUN_RE.sub(self._v6_sub, s)
        s = _V4_RUN_RE.sub(self._v4_sub, s)
        # An alias next to other text can spell a real name again ("Izar-" + "host-..." holds
        # "izar-host"), so the name passes run until nothing changes (a few rounds at most).
        for _ in range(4):
            before = s
            if self._host_re is not None:
                s = self._host_re.sub(lambda m: self.host_alias(m.group(0)), s)
            if self._learned_re is not None:
                s = self._learned_re.sub(lambda m: self.host_alias(m.group(0)), s)
            s = _INTERNAL_DOMAIN_RE.sub(lambda m: self.host_alias(m.group(0)), s)
            if s == before:
                break
        s = _TOKEN_RE.sub(self._token_sub, s)
        # Cut only after scanning: a cut must never leave half of a real name unrecognised.
        return s[:_MAX_STRING]

    def _v6_sub(self, m: re.Match[str]) -> str:
        run = m.group(0)
        if not _v6_candidate(run):
            return run
        addr = _parse_v6(run)
        if addr is None:
            # Address-like but not an address: nobody needs to see it.
            return "ip-" + self._digest("ip", run.lower())
        public = self.address_alias(addr)
        return run if public is None else public

    def _v4_sub(self, m: re.Match[str]) -> str:
        run = m.group(0)
        out = []
        last = 0
        for start, end, addr in _parse_v4(run):
            if start < last:
                continue  # overlaps an address already replaced
            public = self.address_alias(addr)
            if public is None:
                continue
            out.append(run[last:start])
            out.append(public)
            last = end
        out.append(run[last:])
        return "".join(out)

    @staticmethod
    def _token_sub(m: re.Match[str]) -> str:
        t = m.group(0)
        if _looks_random(t, 20):
            return REDACTED
        # A token glued to other words ("Tk9fa...W_ExtUtils-MakeMaker"): judge each piece.
        pieces = re.split(r"([_+=-])", t)
        return "".join(REDACTED if _looks_random(p, 16) else p for p in pieces)

    def scrub(self, value: Any) -> Any:
        """``text()`` applied to every string of a JSON-like value (keys are ours, kept)."""
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {k: self.scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self.scrub(v) for v in value]
        return value

    # -- the final check -----------------------------------------------------------------------

    def check(self, payload: Any, where: str = "data") -> None:
        """Raise LeakRefused if anything secret is left in the strings of ``payload``.

        Keys are not checked: every key of a public payload is a literal of this module."""
        for path, s in _strings(payload, where):
            what = self.leak_in(s)
            if what is not None:
                raise LeakRefused(path, what)

    def leak_in(self, s: str) -> str | None:
        """What kind of secret ``s`` still holds, or None."""
        if s in _VOCABULARY or s in self._memo_clean:
            return None
        what = self._leak_in(s)
        if what is None:
            if len(self._memo_clean) >= _MEMO_MAX:
                self._memo_clean.clear()
            self._memo_clean.add(s)
        return what

    def _leak_in(self, s: str) -> str | None:
        low = s.lower()
        for secret in self._secrets:
            if secret in s:
                return "a configured secret"
        for name in self._check_names:
            if name in low:
                return "a real host name"
        if self._learned_re is not None and self._learned_re.search(s):
            return "a learned host name"
        if _MAC_RE.search(s) or _HEX_RUN_RE.search(s):
            return "a MAC address or long hex string"
        for m in _V4_RUN_RE.finditer(s):
            for _start, _end, addr in _parse_v4(m.group(0)):
                if self._leaks_address(addr):
                    return "a private address"
        for m in _V6_RUN_RE.finditer(s):
            run = m.group(0)
            if not _v6_candidate(run):
                continue
            addr6 = _parse_v6(run)
            if addr6 is None or self._leaks_address(addr6):
                return "a private address"
        return None

    def _leaks_address(self, addr: IPAddress) -> bool:
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            return self._leaks_address(addr.ipv4_mapped)
        if any(addr.version == p.version and addr in p for p in self._public_nets):
            return False
        if any(addr.version == r.version and addr in r for r, _p in self._networks):
            return True
        return self._is_secret_address(addr)

    def finish(self, data: dict[str, Any]) -> dict[str, Any]:
        """Scan every string of an allowlisted payload, then check it. Raises LeakRefused."""
        clean: dict[str, Any] = self.scrub(data)
        self.check(clean)
        return clean

    # -- public payloads (allowlists) ----------------------------------------------------------

    def orchestrator_name(self, status: Any) -> str:
        hostname = status.get("hostname") if isinstance(status, dict) else None
        if isinstance(hostname, str) and hostname.strip():
            return "orch-" + self.host_alias(hostname)
        return "orchestrator"

    def _drone_public(self, d: dict[str, Any]) -> dict[str, Any]:
        builds = d.get("current_builds")
        current = progress = started = None
        if isinstance(builds, list) and builds and isinstance(builds[0], dict):
            current = _str(builds[0].get("cpv"))
            progress = _num(builds[0].get("progress"))
            if progress is not None:
                progress = min(max(progress, 0), 100)
            started = _timestamp(builds[0].get("started"))
        return {
            "name": _str(d.get("name")) or "drone",
            "cores": _int(d.get("cores")),
            "status": _enum(d.get("status"), DRONE_STATES),
            "current_package": current,
            "target": short_target(d.get("target_id")),
            "progress": progress,
            "started": started,
        }

    def build_swarm(
        self, status: Any, drones: Any, *, orchestrator_up: bool
    ) -> dict[str, Any]:
        """``/api/v1/services/public/build-swarm`` data from swarmd's status and drones."""
        self.learn_status(status)
        self.learn_drones(drones)
        st = status if isinstance(status, dict) else {}
        data = {
            "swarm_version": _str(st.get("version")),
            "orchestrator": self.orchestrator_name(st),
            "orchestrator_status": "up" if orchestrator_up else "down",
            "drones": [self._drone_public(d) for d in _list(drones, "drones")],
            "queue": public_counts(st.get("counts")),
        }
        return self.finish(data)

    def build_history(self, builds: Any, drones: Any = None) -> dict[str, Any]:
        """``/api/v1/services/public/build-history`` data from swarmd's ``GET /api/builds``."""
        if drones is not None:
            self.learn_drones(drones)
        out = []
        for b in _list(builds, "builds"):
            out.append({
                "package": _str(b.get("cpv")),
                "drone": _str(b.get("drone_name")),
                "result": _enum(b.get("result"), RESULTS, none_ok=True),
                "started": _timestamp(b.get("started")),
                "finished": _timestamp(b.get("finished")),
                "duration_s": _num(b.get("duration_s")),
            })
        return self.finish({"builds": out})

    def infrastructure(
        self,
        status: Any,
        *,
        orchestrator_up: bool,
        gateway_version: str,
        binhost_url: str,
    ) -> dict[str, Any]:
        """``/api/v1/services/public/infrastructure`` data from swarmd's status."""
        self.learn_status(status)
        st = status if isinstance(status, dict) else {}
        raw_counts = st.get("drones")
        counts: dict[str, Any] = raw_counts if isinstance(raw_counts, dict) else {}
        drones = {s: _int(counts.get(s)) or 0 for s in DRONE_STATES}
        drones["total"] = sum(drones.values())
        data = {
            "orchestrator": {
                "name": self.orchestrator_name(st),
                "status": "up" if orchestrator_up else "down",
                "version": _str(st.get("version")),
                "uptime_s": _num(st.get("uptime_s")),
            },
            "gateway": {"status": "up", "version": gateway_version},
            "drones": drones,
            "binhost_url": binhost_url or None,
        }
        return self.finish(data)

    def queue(self, queue: Any) -> dict[str, Any]:
        """``/api/v1/services/public/queue`` data from swarmd's ``GET /api/queue``."""
        entries = _list(queue, "entries")
        packages: list[dict[str, Any]] = []
        for e in entries:
            state = _enum(e.get("state"), ENTRY_STATES)
            if state not in QUEUED_STATES:
                continue
            item: dict[str, Any] = {
                "package": _str(e.get("cpv")),
                "state": state,
                "position": len(packages) + 1,
            }
            tid = short_target(e.get("target_id"))
            if tid is not None:
                item["target"] = tid
                if e.get("waiting"):
                    # swarmd's text names the full id, a hex run the leak check would redact
                    item["waiting"] = f"no drone for target {tid}"
            packages.append(item)
        counts_src = queue.get("counts") if isinstance(queue, dict) else None
        if not isinstance(counts_src, dict):
            counts_src = count_states(entries)
        waits: dict[str, int] = {}
        for item in packages:
            if "waiting" in item:
                waits[item["waiting"]] = waits.get(item["waiting"], 0) + 1
        data = {"counts": public_counts(counts_src), "queued": len(packages),
                "waiting": [{"reason": w, "count": n}
                            for w, n in sorted(waits.items(), key=lambda kv: -kv[1])],
                "packages": packages}
        return self.finish(data)

    def request_name(self, value: Any) -> str | None:
        """A request id as the public sees it: unchanged when the scan leaves it alone, else a
        stable alias ``req-XXXXXXXXXX`` (a minted ``gw-<uuid hex>`` id holds a hex run the scan
        would redact, and each request must keep a name of its own)."""
        s = _str(value)
        if s is None or not s:
            return None
        if self.text(s) == s and self.leak_in(s) is None:
            return s
        return "req-" + self._digest("request", s)

    def requests(self, requests: Any, queue: Any, drones: Any, *,
                 now: datetime | None = None) -> dict[str, Any]:
        """``/api/v1/services/public/requests`` data from swarmd's ``GET /api/requests``, the
        unfinished entries of ``GET /api/queue`` and ``GET /api/drones``: each open request (and
        the latest finished ones) with its counts and an estimated finish.

        The estimate (docs/GATEWAY.md): per target, the remaining work of the unfinished entries
        whose request priority is at least this request's (swarmd's ``estimate_s``, seconds on 8
        cores; a building entry counts its unfinished part by the drone's progress, else by its
        elapsed time), divided by the 8-core equivalents of that target's ready and building
        drones; never less than the request's critical path on the target's fastest drone.
        No drone for the target: no estimate, and ``waiting`` says why."""
        now = now or datetime.now(UTC)
        capacity: dict[str, float] = {}
        fastest: dict[str, int] = {}
        running: dict[str, tuple[float | None, datetime | None, int]] = {}
        available = 0
        for d in _list(drones, "drones"):
            cores = max(_int(d.get("cores")) or 1, 1)
            for b in d.get("current_builds") or []:
                if isinstance(b, dict) and isinstance(b.get("build_id"), str):
                    running[b["build_id"]] = (_num(b.get("progress")),
                                              _parse_ts(b.get("started")), cores)
            if d.get("status") not in ("ready", "building"):
                continue
            available += 1
            key = _target_key(d.get("target_id"))
            capacity[key] = capacity.get(key, 0.0) + cores / 8
            fastest[key] = max(fastest.get(key, 0), cores)
        # Every unfinished entry: (target, remaining work, critical path) in seconds on 8 cores.
        unfinished: dict[str, tuple[str, float, float]] = {}
        work_by: dict[str, dict[int, float]] = {}
        for e in _list(queue, "entries"):
            eid = e.get("id")
            if e.get("state") not in QUEUED_STATES or not isinstance(eid, str):
                continue
            est = float(_num(e.get("estimate_s")) or 0.0)
            work = est
            bid = e.get("build_id")
            got = running.get(bid) if e.get("state") == "building" and isinstance(bid, str) \
                else None
            if got is not None:
                progress, started, cores = got
                if progress is not None and 0 <= progress <= 100:
                    work = est * (1 - progress / 100)
                elif started is not None:
                    work = max(est - (now - started).total_seconds() * cores / 8, 0.0)
            key = _target_key(e.get("target_id"))
            crit = float(_num(e.get("priority")) or est)
            unfinished[eid] = (key, work, max(crit, work))
            per = work_by.setdefault(key, {})
            prio = _int(e.get("request_priority")) or 0
            per[prio] = per.get(prio, 0.0) + work
        opened: list[dict[str, Any]] = []
        finished: list[dict[str, Any]] = []
        for r in _list(requests, "requests"):
            state = _enum(r.get("state"), REQUEST_STATES)
            raw_summary, raw_counts = r.get("summary"), r.get("counts")
            summary: dict[str, Any] = raw_summary if isinstance(raw_summary, dict) else {}
            counts: dict[str, Any] = raw_counts if isinstance(raw_counts, dict) else {}
            item: dict[str, Any] = {
                "request_id": self.request_name(r.get("id")),
                "state": state,
                "packages": _int(r.get("packages")) or 0,
                **{k: _int(summary.get(k)) or 0
                   for k in ("built", "failed", "blocked", "cancelled")},
                "remaining": sum(_int(counts.get(k)) or 0 for k in QUEUED_STATES),
                "created": _timestamp(r.get("created")),
                "finished": _timestamp(r.get("finished")),
                "estimate_s": None,
                "estimated_finish": None,
                "waiting": None,
            }
            if state != "open":
                finished.append(item)
                continue
            opened.append(item)
            entries = r.get("entries")
            mine = [unfinished[x] for x in entries if isinstance(x, str) and x in unfinished] \
                if isinstance(entries, list) else []
            if not mine:
                continue
            prio = _int(r.get("priority")) or 0
            eta = 0.0
            for key in {m[0] for m in mine}:
                cap = capacity.get(key, 0.0)
                if cap <= 0:
                    tid = short_target(key)
                    item["waiting"] = f"no drone for target {tid}" if tid else "no drone"
                    break
                work = sum(w for p, w in work_by[key].items() if p >= prio)
                crit = max(c for k, _w, c in mine if k == key)
                eta = max(eta, work / cap, crit * 8 / max(fastest.get(key, 8), 1))
            else:
                item["estimate_s"] = round(eta)
                item["estimated_finish"] = iso(now.timestamp() + round(eta))
        opened.sort(key=lambda i: i["created"] or "")
        finished.sort(key=lambda i: i["finished"] or "", reverse=True)
        data = {
            "open": len(opened),
            "drones_available": available,
            "requests": opened[:MAX_OPEN_REQUESTS] + finished[:MAX_FINISHED_REQUESTS],
        }
        return self.finish(data)

    def queue_history(self, samples: Any) -> dict[str, Any]:
        """``/api/v1/services/public/queue-history`` data: queue depth samples (the public
        counts of ``queue_update`` messages the gateway saw, oldest first)."""
        out = []
        for smp in samples if isinstance(samples, list) else []:
            if not isinstance(smp, dict):
                continue
            t = _timestamp(smp.get("t"))
            if t is None:
                continue
            out.append({"t": t, **{k: _int(smp.get(k)) or 0
                                   for k in ("pending", "building", "completed", "failed")}})
        return self.finish({"samples": out})

    def discovery(
        self,
        *,
        orchestrator_url: str,
        orchestrator_up: bool,
        binhost_url: str,
        gateway_version: str,
        full: bool,
    ) -> dict[str, Any]:
        """``/api/v1/services``: where things are; real addresses only when ``full``."""
        data = {
            "orchestrator": {"url": orchestrator_url, "status": "up" if orchestrator_up else "down"},
            "binhost": {"url": binhost_url or None},
            "gateway": {
                "version": gateway_version,
                "public": [
                    "/api/v1/services/public/build-swarm",
                    "/api/v1/services/public/build-history",
                    "/api/v1/services/public/infrastructure",
                    "/api/v1/services/public/queue",
                    "/api/v1/services/public/queue-history",
                    "/api/v1/services/public/requests",
                    "/api/v1/binhost",
                    "/health",
                ],
                "websocket": "/ws/build-status",
                "admin": "/api/swarm-admin",
            },
        }
        return data if full else self.finish(data)

    def public_event(self, event: dict[str, Any]) -> dict[str, Any] | None:
        """A swarmd event ``{"seq","type","timestamp","data"}`` as the public message
        ``{"type","timestamp","data"}``, or None when the type is not public (``resync``, ...)
        or the message failed the leak check (logged by nobody here: the check never raises
        out of this method, the message is simply not sent)."""
        if not isinstance(event, dict):
            return None
        kind = event.get("type")
        raw = event.get("data")
        raw = raw if isinstance(raw, dict) else {}
        data: dict[str, Any]
        if kind == "drone_status":
            self.learn(hosts=[raw.get("hostname")], addresses=[raw.get("ip")])
            data = {
                "name": _str(raw.get("name")) or "drone",
                "cores": _int(raw.get("cores")),
                "status": _enum(raw.get("status"), DRONE_STATES),
                "current_package": _str(raw.get("current_package")),
            }
        elif kind == "build_progress":
            data = {
                "build_id": _str(raw.get("build_id")),
                "package": _str(raw.get("package")),
                "drone": _str(raw.get("drone")),
                "phase": _enum(raw.get("phase"), PHASES),
                "percent": _num(raw.get("percent")),
                "elapsed_s": _num(raw.get("elapsed_s")),
                "estimate_s": _num(raw.get("estimate_s")),
                "result": _enum(raw.get("result"), RESULTS, none_ok=True),
            }
        elif kind == "queue_update":
            data = {k: _int(raw.get(k)) or 0 for k in ("pending", "building", "completed", "failed")}
        elif kind == "build_complete":
            data = {
                "request_id": self.request_name(raw.get("request_id")),
                **{k: _int(raw.get(k)) or 0
                   for k in ("packages", "built", "failed", "blocked", "cancelled")},
                "duration_s": _num(raw.get("duration_s")),
            }
        else:
            return None
        message = {
            "type": kind,
            "timestamp": _timestamp(event.get("timestamp")) or utc_now_iso(),
            "data": data,
        }
        try:
            return self.finish(message)
        except LeakRefused:
            return None


def _looks_random(t: str, min_len: int) -> bool:
    """A random token flips between upper case, lower case and digits at most characters;
    names like ExtUtils-MakeMaker-7 or linux-firmware-20241110 flip rarely."""
    if len(t) < min_len:
        return False
    kinds = ["u" if c.isupper() else "l" if c.islower() else "d" if c.isdigit() else "s"
             for c in t]
    has_digit = "d" in kinds
    has_alpha = "u" in kinds or "l" in kinds
    if not (has_digit and has_alpha):
        return False
    flips = sum(1 for a, b in zip(kinds, kinds[1:], strict=False) if a != b and "s" not in (a, b))
    return flips >= 0.4 * len(t) or (len(t) >= 32 and "-" not in t)


def _target_key(value: Any) -> str:
    return value if isinstance(value, str) else ""


def _parse_ts(value: Any) -> datetime | None:
    if not isinstance(value, str) or not _TIMESTAMP_RE.match(value):
        return None
    try:
        ts = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo is not None else ts.replace(tzinfo=UTC)


def short_target(value: Any) -> str | None:
    """A target id as the public sees it: its first 8 hex digits (SPEC section 12 ids are
    digests of build settings, not secrets; 8 digits stay clear of the hex-run redaction)."""
    if not isinstance(value, str) or not value:
        return None
    head = value[:8].lower()
    return head if all(c in "0123456789abcdef" for c in head) else None


def _strings(value: Any, path: str) -> Iterator[tuple[str, str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(v, f"{path}.{k}" if isinstance(k, str) and k.isidentifier()
                                else f"{path}.<field>")
    elif isinstance(value, list | tuple):
        for i, v in enumerate(value):
            yield from _strings(v, f"{path}[{i}]")


def _list(doc: Any, key: str) -> list[dict[str, Any]]:
    items = doc.get(key) if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        return []
    return [i for i in items if isinstance(i, dict)]


def _str(v: Any) -> str | None:
    if isinstance(v, str) and len(v) <= _MAX_INPUT:
        return v
    return None


def _int(v: Any) -> int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == v and abs(v) < 2**53:
        return int(v)
    return None


def _num(v: Any) -> float | int | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return v
    if isinstance(v, float) and v == v and abs(v) != float("inf"):
        return v
    return None


def _enum(v: Any, allowed: tuple[str, ...], *, none_ok: bool = False) -> str | None:
    if v is None and none_ok:
        return None
    if isinstance(v, str) and v in allowed:
        return v
    return None if none_ok and v is None else "unknown"


def _timestamp(v: Any) -> str | None:
    if isinstance(v, str) and _TIMESTAMP_RE.match(v):
        return v
    return None
