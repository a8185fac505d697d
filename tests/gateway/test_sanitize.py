"""The Galactic Identity System: unit tests, the pure-core rule, and the Hypothesis leak test."""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import random
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import trio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatewayd.sanitize import LeakRefused, Sanitizer
from tests.gateway.fakes import ADMIN_KEYS, CONTROL_TOKEN, IDENTITY, Rig


def make() -> Sanitizer:
    return Sanitizer(IDENTITY["hosts"], IDENTITY["networks"], b"k",
                     secrets=[*ADMIN_KEYS.split(","), CONTROL_TOKEN])


@pytest.mark.parametrize(("raw", "public"), [
    ("drone-Izar-Host", "drone-Izar"),
    ("drone-izar-host-2", "drone-Izar-2"),
    ("drone-Secretbox", "drone-Vega"),
    ("SECRETBOX.LAN", "Vega"),
    ("http://10.42.0.201:8080/x", "http://192.0.2.201:8080/x"),
    ("010.042.000.201", "192.0.2.201"),
    ("1.10.42.0.201", "1.192.0.2.201"),
    ("127.0.0.1 and ::1", "127.0.0.1 and ::1"),
    ("8.8.8.8", "8.8.8.8"),
    ("aa:bb:cc:0d:1e:2f", "[redacted]"),
    ("AA-BB-CC-0D-1E-2F", "[redacted]"),
    ("mac aabb.cc0d.1e2f", "mac [redacted]"),
    ("x aabbcc0d1e2f y", "x [redacted] y"),
    ("token=abc123", "token=[redacted]"),
    ("SWARM_ADMIN_KEY: hunter2", "SWARM_ADMIN_KEY: [redacted]"),
    ("Authorization: Bearer xyz.abc", "Authorization: [redacted]"),
    ("http://user:pw@host.example/", "http://host.example/"),
    ("dev-perl/ExtUtils-MakeMaker-7.700.0", "dev-perl/ExtUtils-MakeMaker-7.700.0"),
    ("sys-kernel/linux-firmware-20241110", "sys-kernel/linux-firmware-20241110"),
    ("sys-libs/glibc-2.39", "sys-libs/glibc-2.39"),
    ("2026-02-23T10:30:00Z", "2026-02-23T10:30:00Z"),
    ("Xk3pQ9zL2mN8vB4cR7tY1wE6aa", "[redacted]"),
])
def test_text(raw: str, public: str) -> None:
    assert make().text(raw) == public


def test_unknown_private_addresses_and_hosts_get_stable_keyed_aliases() -> None:
    a, b, other = make(), make(), Sanitizer({}, {}, b"another key")
    for raw in ("192.168.20.7", "fd00:42::201", "100.100.1.1", "nas-7.lan"):
        out = a.text(raw)
        assert out != raw
        assert out.startswith(("ip-", "host-"))
        assert b.text(raw) == out  # same key, same alias: stable across restarts
        assert other.text(raw) != out
    assert a.text("192.168.020.007") == a.text("192.168.20.7")
    a.learn(hosts=["qzhidden.example.net"], addresses=["203.0.113.50"])
    assert "qzhidden" not in a.text("built on QZHIDDEN-7").lower()
    assert a.host_alias("qzhidden") == b.host_alias("QZHIDDEN")


def test_final_check_refuses_a_leak() -> None:
    s = make()
    s.learn(hosts=["qzhidden"])
    for bad in ("izar-host", "10.42.0.9", "fd00::1", "aa:bb:cc:dd:ee:ff", "qzhidden",
                CONTROL_TOKEN, "192.168.1.1"):
        with pytest.raises(LeakRefused) as info:
            s.check({"drones": [{"name": bad}]})
        assert bad not in str(info.value)
    s.check({"x": "192.0.2.5 127.0.0.1 drone-Izar"})


def test_public_event_allowlist() -> None:
    s = make()
    ev = s.public_event({"seq": 3, "type": "drone_status", "timestamp": "2026-02-23T10:30:00Z",
                         "data": {"drone_id": "d-1", "name": "drone-qzhost", "hostname": "qzhost",
                                  "ip": "10.42.0.7", "mac": "aa:bb:cc:dd:ee:ff", "cores": 8,
                                  "status": "building", "current_package": "a/b-1"}})
    assert ev is not None
    assert set(ev) == {"type", "timestamp", "data"}
    assert set(ev["data"]) == {"name", "cores", "status", "current_package"}
    assert "qzhost" not in json.dumps(ev)
    bp = s.public_event({"seq": 4, "type": "build_progress", "timestamp": "x",
                         "data": {"build_id": "b-1", "package": "a/b-1", "drone": "drone-Izar-Host",
                                  "drone_id": "d-1", "phase": "finished", "percent": 100,
                                  "elapsed_s": 5.0, "estimate_s": 6.0, "result": "success"}})
    assert bp is not None
    assert bp["data"]["drone"] == "drone-Izar"
    assert set(bp["data"]) == {"build_id", "package", "drone", "phase", "percent", "elapsed_s",
                               "estimate_s", "result"}
    qu = s.public_event({"type": "queue_update", "data": {"pending": 1, "building": 2,
                                                         "completed": 3, "failed": 4, "x": 1}})
    assert qu is not None
    assert qu["data"] == {"pending": 1, "building": 2, "completed": 3,
                                             "failed": 4}
    bc = s.public_event({"type": "build_complete", "data": {"request_id": "r-1", "packages": 3}})
    assert bc is not None
    assert bc["data"]["packages"] == 3
    assert bc["data"]["built"] == 0
    assert s.public_event({"seq": 9, "type": "resync", "data": {}}) is None
    assert s.public_event({"type": "drone_registered", "data": {}}) is None


def test_sanitizer_never_imports_trio() -> None:
    code = "import gatewayd.sanitize, sys; print('trio' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- the leak test -------------------------------------------------------------------------------

SAFE_WORDS = ["drone", "build", "sys-libs/glibc-2.39", "x86_64", "gcc", "emerge", "ok", "amd64",
              "dev-libs/openssl-3.3.2", "ready", "queue", "log", "www-client/firefox-128.0",
              "1.5", "r-000001", "", "error", "ExtUtils-MakeMaker-7.70"]
SEPARATORS = [" ", "/", "-", "_", ",", "(", ")", ";", " at ", "\n"]
KNOWN_HOSTS = ["Izar-Host", "IZAR-HOST", "izar-host", "secretbox.lan", "Secretbox", "SECRETBOX",
               "Altair-Link", "altair-link"]
NON_HEX = "ghijklmnopqrstuvwxyz"


# Hypothesis draws a seed and the state is built from random.Random(seed): building Hypothesis
# strategies per field (or drawing each choice through st.randoms()) costs tens of milliseconds
# per example, this well under one. Shrinking then only shrinks the seed; a failure prints the
# whole state.

def canary_ipv4(r: random.Random) -> tuple[str, list[str]]:
    net = r.choice(["10.42.0", "192.168.20", "172.16.5", "100.64.3", "10.9.8"])
    canon = f"{net}.{r.randint(1, 254)}"
    padded = ".".join(f"{int(p):03d}" for p in canon.split("."))
    text = r.choice([canon, padded, f"http://{canon}:8080/api/status", f"{canon}:22",
                     f"http://{padded}/x"])
    return text, [canon, padded]


def canary_ipv6(r: random.Random) -> tuple[str, list[str]]:
    prefix = r.choice(["fd00:42::", "fe80::", "fd12:3456:789a:1::", "::ffff:10.42.0."])
    if prefix.endswith("."):
        addr = ipaddress.IPv6Address(f"{prefix}{r.randint(1, 254)}")
    else:
        addr = ipaddress.IPv6Address(f"{prefix}{r.randint(1, 0xFFFF):x}")
    text = r.choice([addr.compressed, addr.exploded, f"http://[{addr.compressed}]:8080/"])
    return text, [addr.compressed, addr.exploded]


def canary_mac(r: random.Random) -> tuple[str, list[str]]:
    raw = r.randbytes(6).hex()
    pairs = [raw[i:i + 2] for i in range(0, 12, 2)]
    forms = [":".join(pairs), "-".join(pairs), ".".join(raw[i:i + 4] for i in range(0, 12, 4)), raw]
    text = r.choice(forms)
    return (text.upper() if r.random() < 0.5 else text), forms


def canary_secret(r: random.Random) -> tuple[str, list[str]]:
    value = "pw" + "".join(r.choices("abcdefghjkmnpqrstuvwxyz0123456789", k=r.randint(10, 14)))
    token = "Tk9" + "".join(r.choices(
        "ABCDEFGHJKLMNPQRSTUVWXYZabcdefghijkmnopqrstuvwxyz0123456789", k=r.randint(40, 48)))
    form = r.choice(["kv", "bearer", "userinfo", "configured", "token", "keyname"])
    if form == "kv":
        label = r.choice(["password", "passwd", "token", "secret", "api_key", "Password"])
        return f"{label}{r.choice(['=', ': ', ':'])}{value}", [value]
    if form == "bearer":
        return f"Authorization: Bearer {value}", [value]
    if form == "userinfo":
        return f"https://admin:{value}@binhost.example.org/", [value]
    if form == "configured":
        secret = r.choice([*ADMIN_KEYS.split(","), CONTROL_TOKEN])
        return secret, [secret]
    if form == "keyname":
        return f"SWARM_CONTROL_TOKEN={value}", [value]
    return token, [token]


def canary_text(r: random.Random, hosts: list[str]) -> tuple[str, list[str]]:
    kind = r.randrange(7 if hosts else 5)
    if kind == 0:
        return canary_ipv4(r)
    if kind == 1:
        return canary_ipv6(r)
    if kind == 2:
        return canary_mac(r)
    if kind == 3:
        return canary_secret(r)
    if kind == 4:
        h = r.choice(KNOWN_HOSTS)
        return h, [h.lower()]
    h = r.choice(hosts)
    return (h if kind == 5 else h.upper() + ".lan"), [h.lower()]


def messy_string(r: random.Random, hosts: list[str], canaries: list[str]) -> str:
    out = ""
    for _ in range(r.randint(0, 4)):
        if r.random() < 0.4:
            text, forbidden = canary_text(r, hosts)
            canaries.extend(forbidden)
        else:
            text = r.choice(SAFE_WORDS)
        out += text + r.choice(SEPARATORS)
    return out


def swarm_state(r: random.Random) -> tuple[dict[str, Any], list[str]]:
    canaries: list[str] = []
    n_drones = r.randint(0, 4)
    names = ["zq" + "".join(r.choices(NON_HEX, k=r.randint(4, 8))) for _ in range(n_drones + 1)]
    hostnames = [r.choice([names[i], names[i] + ".lan", r.choice(KNOWN_HOSTS)])
                 for i in range(n_drones)]
    # Unknown host names the gateway can know of: those in swarmd's hostname fields.
    unknown = [names[-1]] + [h.split(".")[0] for h in hostnames if h.startswith("zq")]
    canaries.extend(unknown)
    canaries.extend(("izar-host", "secretbox", "altair-link"))

    def s() -> str:
        return messy_string(r, unknown, canaries)

    def maybe() -> Any:
        return r.choice([None, r.randint(-5, 64), r.uniform(-1e6, 1e6), "x", s()])

    drones = []
    for i, hostname in enumerate(hostnames):
        ip_text, ip_forbidden = r.choice([canary_ipv4, canary_ipv6])(r)
        mac_text, mac_forbidden = canary_mac(r)
        canaries.extend(ip_forbidden + mac_forbidden)
        drones.append({
            "id": f"d-{i}", "name": s() + r.choice([hostname, "drone"]),
            "hostname": hostname, "ip": ip_text, "mac": mac_text, "cores": maybe(),
            "status": r.choice(["ready", "building", s()]),
            "current_builds": [{"build_id": s(), "cpv": s(), "progress": maybe()}],
            "secret_extra": s(), s() or "k": s(),
        })
    status = {"status": "ok", "version": s(), "hostname": names[-1], "uptime_s": maybe(),
              "counts": {"pending": maybe(), "built": 3, s() or "z": s()},
              "drones": {"ready": maybe(), "offline": 1}, "journal": {"dir": s()}}
    queue = {"entries": [{"id": s(), "cpv": s(), "state": r.choice(
        ["pending", "building", "built", s()]), "drone": s(), "reason": s()}
        for _ in range(r.randint(0, 4))]}
    builds = [{"id": s(), "cpv": s(), "drone_name": s(), "result": r.choice(
        ["success", None, s()]), "started": s(), "finished": "2026-02-23T10:30:00Z",
        "duration_s": maybe(), "error": s(), "artifact": {"path": s()}}
        for _ in range(r.randint(0, 3))]
    state = {"status": status, "drones": drones, "queue": queue, "builds": builds,
             "error_body": s()}
    return state, sorted({c.lower() for c in canaries if c})


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage() + " " + json.dumps(getattr(record, "ids", {}),
                                                                 default=str))


ROUTES = ["/api/v1/services/public/build-swarm", "/api/v1/services/public/build-history",
          "/api/v1/services/public/infrastructure", "/api/v1/services/public/queue",
          "/api/v1/binhost", "/api/v1/services"]


def test_no_canary_reaches_the_public() -> None:
    """>= 1,000 random swarm states: nothing real in any public body, error body, cache entry
    or log line of the public path."""
    tmp = tempfile.TemporaryDirectory()
    rig = Rig(Path(tmp.name), orchestrator="http://10.42.0.201:8080",
              public_binhost_url="http://user:pw1234567@192.168.20.194/packages")
    capture = Capture()
    # The public path's own loggers, at the levels swarmlib.logsetup gives them in production
    # (httpx's per-request lines, which name the orchestrator's URL, are at WARNING there).
    root = logging.getLogger()
    root.addHandler(capture)
    old_level = root.level
    root.setLevel(logging.INFO)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    examples = 0

    async def one(state: dict[str, Any], n: int) -> list[tuple[str, str]]:
        rig.gw.sanitizer = Sanitizer(IDENTITY["hosts"], IDENTITY["networks"], b"k",
                                     secrets=[*ADMIN_KEYS.split(","), CONTROL_TOKEN])
        rig.gw.cache.clear()
        rig.fake.state = state
        rig.fake.fail_status = None
        rig.fake.error_body = state["error_body"]
        rig.fake.up = True
        rig.gw.probe.success()
        out = []
        for path in ROUTES[:4]:
            resp = await rig.client.get(path)
            out.append((path, (await resp.get_data()).decode()))
        for key, entry in rig.gw.cache.entries().items():
            out.append(("cache " + key, json.dumps(entry.value)))
        if n % 2:
            return out
        # swarmd failing with secrets in its error body (every other example, each route in
        # turn): the public sees none of it.
        rig.gw.cache.clear()
        rig.fake.fail_status = 500
        path = ROUTES[(n // 2) % 4]
        resp = await rig.client.get(path)
        out.append((path + " (error)", (await resp.get_data()).decode()))
        return out

    @settings(max_examples=int(os.environ.get("LEAK_EXAMPLES", "1000")), deadline=None,
              database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(st.integers(0, 2**64 - 1))
    def check(seed: int) -> None:
        nonlocal examples
        examples += 1
        state, canaries = swarm_state(random.Random(seed))
        capture.lines.clear()
        bodies = trio.run(one, state, examples)
        bodies += [("log", line) for line in capture.lines]
        for where, body in bodies:
            low = body.lower()
            for canary in canaries:
                assert canary not in low, f"{canary!r} leaked in {where}: {body[:2000]} STATE {state}"
            assert "sanitizer_refused" not in low, f"refused in {where}: {state}"
            assert '"internal"' not in low, f"internal error in {where}: {state}"

    try:
        check()
        # Routes that do not depend on swarmd's data, once.
        async def fixed() -> list[str]:
            return [(await (await rig.client.get(p)).get_data()).decode() for p in ROUTES[4:]]

        for body in trio.run(fixed):
            assert "192.168.20.194" not in body
            assert "pw1234567" not in body
            assert "10.42.0.201" not in body
    finally:
        root.removeHandler(capture)
        root.setLevel(old_level)
        tmp.cleanup()
    assert examples >= 1000
