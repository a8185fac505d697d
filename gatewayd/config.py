"""gatewayd's configuration keys (SPEC section 10): TOML file, ``GATEWAYD_*`` env, flags.

Secrets come only from the environment or a ``<key>_file`` entry of the TOML file:
``SWARM_ADMIN_KEY`` (one key or a comma-separated list, for rotation), ``SWARM_CONTROL_TOKEN``
(sent to swarmd), ``SWARM_DRONE_TOKEN`` (optional: lets drones read the real addresses from
discovery) and ``GATEWAYD_ALIAS_KEY`` (the key of the sanitizer's stable aliases; when unset,
gatewayd keeps a random one in ``<spool_dir>/alias.key``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import attrs

from gatewayd.forwarded import TrustedProxies
from swarmlib.config import key, load, parse_hostport, secret_field
from swarmlib.errors import ConfigError

ENV_PREFIX = "GATEWAYD"
PROG = "gatewayd"
MAX_BODY_BYTES = 8 * 1024 * 1024


@attrs.frozen(kw_only=True)
class GatewayConfig:
    listen: str = key("127.0.0.1:8090", "public + admin listener HOST:PORT")
    admin_listen: str = key("127.0.0.1:8100", "admin-only listener HOST:PORT (also /metrics)")
    orchestrator: str = key("http://127.0.0.1:8080", "swarmd base URL")
    probe_interval_s: float = key(30.0, "seconds between health probes of swarmd")
    probe_failures: int = key(3, "consecutive probe failures that mark swarmd down")
    probe_timeout_s: float = key(5.0, "time allowed for one probe")
    request_timeout_s: float = key(30.0, "time allowed for one call forwarded to swarmd")
    cache_ttl_s: float = key(10.0, "public responses are cached this long per route")
    spool_dir: str = key("/var/lib/build-swarm-gateway/spool", "durable spool of submissions")
    spool_max_requests: int = key(1000, "spooled submissions held at most")
    spool_max_bytes: int = key(64 * 1024 * 1024, "spooled submission bytes held at most")
    public_binhost_url: str = key("", "binhost URL clients pull binary packages from")
    ws_ping_interval_s: float = key(60.0, "WebSocket ping interval")
    ws_pong_timeout_s: float = key(30.0, "drop a WebSocket client whose pong is this late")
    ws_max_clients: int = key(1000, "WebSocket clients served at most")
    ws_client_buffer: int = key(256, "messages queued per WebSocket client before it is dropped")
    auth_max_failures: int = key(10, "admin-key failures per client address before 429")
    auth_window_s: float = key(60.0, "window in which admin-key failures are counted")
    auth_lockout_s: float = key(300.0, "how long a client address gets 429 after too many failures")
    trusted_proxies: list[str] = key(
        [], "reverse proxies (IPs or CIDRs) whose forwarding header names the client")
    trusted_proxy_header: str = key(
        "x-forwarded-for", "the one header the trusted proxies write: x-forwarded-for or "
        "forwarded (the other is ignored)")
    log_format: str = key("text", "text or json")
    identity: dict[str, Any] = key({}, "identity map: [identity.hosts] and [identity.networks]")
    admin_key: str = secret_field(env="SWARM_ADMIN_KEY", help="admin key(s), comma-separated")
    control_token: str = secret_field(env="SWARM_CONTROL_TOKEN", help="bearer token for swarmd")
    drone_token: str = secret_field(env="SWARM_DRONE_TOKEN", help="drone token (discovery)")
    alias_key: str = secret_field(env="GATEWAYD_ALIAS_KEY", help="key of the stable aliases")

    @property
    def admin_keys(self) -> list[str]:
        return [k.strip() for k in self.admin_key.split(",") if k.strip()]

    @property
    def identity_hosts(self) -> dict[str, str]:
        return dict(self.identity.get("hosts", {}) or {})

    @property
    def identity_networks(self) -> dict[str, str]:
        return dict(self.identity.get("networks", {}) or {})

    def proxies(self) -> TrustedProxies:
        return TrustedProxies.parse(self.trusted_proxies, header=self.trusted_proxy_header)

    def listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.listen, "listen")

    def admin_listen_addr(self) -> tuple[str, int]:
        return parse_hostport(self.admin_listen, "admin_listen")

    def validate(self) -> None:
        """Checks that need more than one value; raises ConfigError with one line."""
        self.listen_addr()
        self.admin_listen_addr()
        self.proxies()
        url = urlsplit(self.orchestrator)
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ConfigError(f"orchestrator: expected an http(s) URL, got {self.orchestrator!r}")
        for name in ("probe_interval_s", "probe_timeout_s", "request_timeout_s", "cache_ttl_s",
                     "ws_ping_interval_s", "ws_pong_timeout_s", "auth_window_s", "auth_lockout_s"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"key '{name}': must be greater than 0")
        for name in ("probe_failures", "spool_max_requests", "spool_max_bytes", "ws_max_clients",
                     "ws_client_buffer", "auth_max_failures"):
            if getattr(self, name) < 1:
                raise ConfigError(f"key '{name}': must be at least 1")
        if self.log_format not in ("text", "json"):
            raise ConfigError(f"log_format: expected 'text' or 'json', got {self.log_format!r}")
        unknown = set(self.identity) - {"hosts", "networks"}
        if unknown:
            raise ConfigError(f"identity: unknown table(s) {', '.join(sorted(unknown))} "
                              "(known: hosts, networks)")
        for table in ("hosts", "networks"):
            value = self.identity.get(table, {})
            if not isinstance(value, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in value.items()
            ):
                raise ConfigError(f"identity.{table}: expected a table of strings")
        for name, alias in self.identity_hosts.items():
            if not name.strip() or not alias.strip():
                raise ConfigError(f"identity.hosts: empty name or alias in {name!r} = {alias!r}")
        for real, public in self.identity_networks.items():
            check_network_pair(real, public)


def check_network_pair(real: str, public: str) -> tuple[Any, Any]:
    try:
        r = ipaddress.ip_network(real, strict=False)
        p = ipaddress.ip_network(public, strict=False)
    except ValueError as exc:
        raise ConfigError(f"identity.networks: {exc}") from None
    if r.version != p.version or r.prefixlen != p.prefixlen:
        raise ConfigError(
            f"identity.networks: {real!r} and {public!r} must be the same IP version and prefix "
            "length (the host part is kept)"
        )
    return r, p


def load_config(argv: Sequence[str] | None = None, environ: Any = None) -> GatewayConfig:
    cfg = load(GatewayConfig, PROG, ENV_PREFIX, argv, environ,
               description="build-swarm gateway: discovery, public API, admin API, push")
    cfg.validate()
    return cfg
