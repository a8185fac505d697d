"""The client address behind a trusted reverse proxy (gatewayd.forwarded, ``trusted_proxies``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from gatewayd.config import load_config
from gatewayd.forwarded import TrustedProxies, forwarded_for, parse_node
from swarmlib.errors import ConfigError
from tests.gateway.fakes import Rig

KEY1 = "key-one-0123456789"
PATH = "/api/swarm-admin/status"
PROXY = ("10.0.0.2", 4000)


# -- parsing ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("node", "addr"),
    [
        ("192.0.2.60", "192.0.2.60"),
        ("192.0.2.60:4711", "192.0.2.60"),
        ("[2001:db8:cafe::17]", "2001:db8:cafe::17"),
        ("[2001:db8:cafe::17]:4711", "2001:db8:cafe::17"),
        ("2001:db8:cafe::17", "2001:db8:cafe::17"),
        ("::ffff:192.0.2.7", "192.0.2.7"),
        ("unknown", None),
        ("_hidden", None),
        ("", None),
        ("not an address", None),
        ("[2001:db8::1", None),
    ],
)
def test_parse_node(node: str, addr: str | None) -> None:
    got = parse_node(node)
    assert (str(got) if got is not None else None) == addr


def test_forwarded_header_rfc7239_forms() -> None:
    assert forwarded_for(['for=192.0.2.60;proto=http;by=203.0.113.43']) == ["192.0.2.60"]
    assert forwarded_for(['For="[2001:db8:cafe::17]:4711"']) == ["[2001:db8:cafe::17]:4711"]
    assert forwarded_for(["for=192.0.2.43, for=198.51.100.17"]) == ["192.0.2.43", "198.51.100.17"]
    # Several header lines are one list, in order; quoted commas and semicolons stay inside.
    assert forwarded_for(['for=192.0.2.43;x="a,b;c"', "proto=https;for=unknown"]) == [
        "192.0.2.43", "unknown"]
    assert forwarded_for(['for="\\"odd\\""']) == ['"odd"']
    # An element without for= still counts as a hop (of unknown address).
    assert forwarded_for(["proto=http, for=192.0.2.1"]) == ["", "192.0.2.1"]


def test_parse_trusted_and_bad_values() -> None:
    t = TrustedProxies.parse(["10.0.0.0/8", "192.0.2.1", "2001:db8::/32"])
    assert t.trusts("10.1.2.3")
    assert t.trusts("::ffff:10.1.2.3")
    assert t.trusts("192.0.2.1")
    assert not t.trusts("192.0.2.2")
    assert t.trusts("2001:db8::5")
    assert not t.trusts("unknown")
    # A comma-separated string (environment, flag) is the same as a list.
    assert TrustedProxies.parse(["10.0.0.1, 10.0.0.2"]).trusts("10.0.0.2")
    with pytest.raises(ConfigError, match="'10.0.0.300'"):
        TrustedProxies.parse(["10.0.0.300"])
    with pytest.raises(ConfigError, match="trusted_proxies"):
        TrustedProxies.parse(["proxy.lan"])


def test_client_is_rightmost_untrusted_hop() -> None:
    t = TrustedProxies.parse(["10.0.0.0/24"])
    none = TrustedProxies.parse([])
    # Untrusted peer: the headers are ignored whatever they say.
    assert none.client("10.0.0.2", forwarded=["for=1.2.3.4"], x_forwarded_for=["1.2.3.4"]) \
        == "10.0.0.2"
    assert t.client("198.51.100.9", forwarded=[], x_forwarded_for=["1.2.3.4"]) == "198.51.100.9"
    # Trusted peer, no header: the peer itself.
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=[]) == "10.0.0.2"
    # A forged left part is skipped: the rightmost untrusted hop wins.
    assert t.client("10.0.0.2", forwarded=[],
                    x_forwarded_for=["6.6.6.6, 203.0.113.5"]) == "203.0.113.5"
    assert t.client("10.0.0.2", forwarded=[],
                    x_forwarded_for=["6.6.6.6, 203.0.113.5, 10.0.0.7"]) == "203.0.113.5"
    # Only the configured header is read (default X-Forwarded-For): the other kind is passed
    # through by the proxy as the client wrote it, so it changes nothing, whatever it says.
    assert t.header == "x-forwarded-for"
    assert t.client("10.0.0.2", forwarded=["for=6.6.6.6"],
                    x_forwarded_for=["203.0.113.5"]) == "203.0.113.5"
    assert t.client("10.0.0.2", forwarded=["for=unknown"],
                    x_forwarded_for=["203.0.113.5"]) == "203.0.113.5"
    assert t.client("10.0.0.2", forwarded=["for=6.6.6.6"], x_forwarded_for=[]) == "10.0.0.2"
    # A hop that is not an address: the trusted proxy that reported it is the client.
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=["unknown, 10.0.0.7"]) \
        == "10.0.0.7"
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=["_hidden"]) == "10.0.0.2"
    # Every hop trusted: the leftmost one.
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=["10.0.0.9, 10.0.0.8"]) \
        == "10.0.0.9"
    # Addresses are normalized, so one client has one key.
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=["2001:DB8:0::1"]) == "2001:db8::1"



def test_forwarded_header_when_configured() -> None:
    """``trusted_proxy_header = "forwarded"``: only RFC 7239 ``Forwarded`` is read; a forged
    X-Forwarded-For changes nothing."""
    t = TrustedProxies.parse(["10.0.0.0/24"], header="Forwarded")
    assert t.header == "forwarded"
    assert t.client("10.0.0.2", forwarded=['for="[2001:db8::7]:1234"'],
                    x_forwarded_for=["6.6.6.6"]) == "2001:db8::7"
    assert t.client("10.0.0.2", forwarded=[], x_forwarded_for=["203.0.113.5"]) == "10.0.0.2"
    assert t.client("10.0.0.2", forwarded=["for=6.6.6.6, for=203.0.113.5"],
                    x_forwarded_for=["unknown"]) == "203.0.113.5"
    assert t.client("10.0.0.2", forwarded=["for=unknown, for=10.0.0.7"],
                    x_forwarded_for=["203.0.113.5"]) == "10.0.0.7"
    # An untrusted peer's headers stay ignored.
    assert t.client("198.51.100.9", forwarded=["for=1.2.3.4"], x_forwarded_for=[]) \
        == "198.51.100.9"
    with pytest.raises(ConfigError, match="trusted_proxy_header") as exc:
        TrustedProxies.parse(["10.0.0.2"], header="x-real-ip")
    assert "'x-real-ip'" in str(exc.value)
    assert "\n" not in str(exc.value)


# -- configuration ---------------------------------------------------------------------------------


def test_config_key_from_file_env_and_flag(tmp_path: Path) -> None:
    conf = tmp_path / "gatewayd.toml"
    conf.write_text('trusted_proxies = ["10.0.0.2", "fd00::/8"]\n')
    env: dict[str, str] = {}
    assert load_config(["--config", str(conf)], env).trusted_proxies == ["10.0.0.2", "fd00::/8"]
    env = {"GATEWAYD_TRUSTED_PROXIES": "10.0.0.3,10.0.0.4"}
    cfg = load_config(["--config", str(conf)], env)
    assert cfg.proxies().trusts("10.0.0.4")
    assert not cfg.proxies().trusts("10.0.0.2")
    cfg = load_config(["--config", str(conf), "--trusted-proxies", "192.0.2.0/24"], env)
    assert cfg.proxies().trusts("192.0.2.77")
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_config(["--config", str(empty)], {}).trusted_proxies == []  # default: none


def test_header_key_from_file_env_and_flag(tmp_path: Path) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    assert load_config(["--config", str(empty)], {}).proxies().header == "x-forwarded-for"
    conf = tmp_path / "gatewayd.toml"
    conf.write_text('trusted_proxies = ["10.0.0.2"]\ntrusted_proxy_header = "forwarded"\n')
    assert load_config(["--config", str(conf)], {}).proxies().header == "forwarded"
    env = {"GATEWAYD_TRUSTED_PROXY_HEADER": "X-Forwarded-For"}
    assert load_config(["--config", str(conf)], env).proxies().header == "x-forwarded-for"
    cfg = load_config(["--config", str(conf), "--trusted-proxy-header", "forwarded"], env)
    assert cfg.proxies().header == "forwarded"
    with pytest.raises(ConfigError, match="trusted_proxy_header") as exc:
        load_config(["--config", str(conf), "--trusted-proxy-header", "both"], {})
    assert "\n" not in str(exc.value)


def test_bad_trusted_proxy_is_one_config_error(tmp_path: Path) -> None:
    conf = tmp_path / "gatewayd.toml"
    conf.write_text('trusted_proxies = ["10.0.0.2", "proxy.example"]\n')
    with pytest.raises(ConfigError) as exc:
        load_config(["--config", str(conf)], {})
    assert "proxy.example" in str(exc.value)
    assert "\n" not in str(exc.value)


# -- the admin lockout -----------------------------------------------------------------------------


async def _fail_until_locked(rig: Rig, **kw: Any) -> None:
    codes = []
    for _ in range(rig.cfg.auth_max_failures):
        resp = await rig.client.get(PATH, headers={"X-Admin-Key": "guess", **kw.get("headers", {})},
                                    scope_base={"client": PROXY})
        codes.append(resp.status_code)
    assert codes[-1] == 429


async def test_clients_behind_trusted_proxy_have_separate_lockouts(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    rig: Rig = make_rig(trusted_proxies=["10.0.0.0/24"])
    rig.gw.probe.success()
    await _fail_until_locked(rig, headers={"X-Forwarded-For": "203.0.113.5"})
    locked = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                 "X-Forwarded-For": "203.0.113.5"},
                                  scope_base={"client": PROXY})
    assert locked.status_code == 429
    # Another admin behind the same proxy is not locked out.
    other = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                "X-Forwarded-For": "203.0.113.6"},
                                 scope_base={"client": PROXY})
    assert other.status_code == 200
    fwd = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                              "Forwarded": 'for="[2001:db8::7]:1234"'},
                               scope_base={"client": PROXY})
    assert fwd.status_code == 200
    # The locked client cannot escape by prepending a forged hop (the proxy appends the real one).
    forged = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                 "X-Forwarded-For": "1.1.1.1, 203.0.113.5"},
                                  scope_base={"client": PROXY})
    assert forged.status_code == 429
    # Nor by adding a Forwarded header the proxy passes through: only X-Forwarded-For (the
    # header this proxy writes) is read.
    forged = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                 "X-Forwarded-For": "203.0.113.5",
                                                 "Forwarded": "for=198.51.100.1"},
                                  scope_base={"client": PROXY})
    assert forged.status_code == 429


async def test_forged_forwarded_does_not_lock_out_others_behind_the_proxy(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    """The review's attack: behind nginx (appends to X-Forwarded-For, passes a client's
    Forwarded through), a client adds ``Forwarded: for=unknown`` and guesses keys. Only it is
    locked out, not the proxy's address and every admin behind it."""
    rig: Rig = make_rig(trusted_proxies=["10.0.0.0/24"])
    rig.gw.probe.success()
    for forged in ("for=unknown", "for=10.0.0.2", "for=_x, for=198.51.100.4"):
        await _fail_until_locked(rig, headers={"X-Forwarded-For": "203.0.113.5",
                                               "Forwarded": forged})
    # A second admin behind the same proxy, whose own forward proxy added a Forwarded header
    # (passed through by nginx too): not locked out.
    other = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                "X-Forwarded-For": "192.168.1.5, 203.0.113.6",
                                                "Forwarded": "for=192.168.1.5"},
                                 scope_base={"client": PROXY})
    assert other.status_code == 200
    # Nor is an admin on the proxy's host calling the gateway directly (no header).
    direct = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1},
                                  scope_base={"client": PROXY})
    assert direct.status_code == 200
    # The guesser itself is locked out under its own address.
    attacker = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                   "X-Forwarded-For": "203.0.113.5"},
                                    scope_base={"client": PROXY})
    assert attacker.status_code == 429


async def test_forged_x_forwarded_for_ignored_when_proxy_writes_forwarded(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    rig: Rig = make_rig(trusted_proxies=["10.0.0.0/24"], trusted_proxy_header="forwarded")
    rig.gw.probe.success()
    await _fail_until_locked(rig, headers={"Forwarded": "for=203.0.113.5",
                                           "X-Forwarded-For": "unknown"})
    # A fresh X-Forwarded-For each time does not give the guesser a fresh address ...
    resp = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                               "Forwarded": "for=203.0.113.5",
                                               "X-Forwarded-For": "198.51.100.9"},
                                scope_base={"client": PROXY})
    assert resp.status_code == 429
    # ... and the other clients of the proxy are not locked out with it.
    other = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                                "Forwarded": "for=203.0.113.6",
                                                "X-Forwarded-For": "203.0.113.5"},
                                 scope_base={"client": PROXY})
    assert other.status_code == 200

async def test_forged_forwarded_for_without_trusted_proxies_does_not_escape(
    rig: Rig, autojump_clock: trio.testing.MockClock
) -> None:
    await _fail_until_locked(rig, headers={"X-Forwarded-For": "203.0.113.5"})
    for headers in ({"X-Forwarded-For": "203.0.113.99"}, {"Forwarded": "for=198.51.100.1"}, {}):
        resp = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1, **headers},
                                    scope_base={"client": PROXY})
        assert resp.status_code == 429, headers


async def test_untrusted_peer_cannot_claim_another_address(
    make_rig: Any, autojump_clock: trio.testing.MockClock
) -> None:
    rig: Rig = make_rig(trusted_proxies=["10.9.9.9"])
    rig.gw.probe.success()
    await _fail_until_locked(rig, headers={"X-Forwarded-For": "203.0.113.5"})
    resp = await rig.client.get(PATH, headers={"X-Admin-Key": KEY1,
                                               "X-Forwarded-For": "203.0.113.77"},
                                scope_base={"client": PROXY})
    assert resp.status_code == 429
