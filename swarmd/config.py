"""swarmd's configuration keys (SPEC section 10). Env prefix SWARMD_."""

from __future__ import annotations

import attrs

from swarmlib.config import key, secret_field


@attrs.frozen(kw_only=True)
class SwarmdConfig:
    listen: str = key("127.0.0.1:8080", "HOST:PORT of the internal HTTP API")
    state_dir: str = key("/var/lib/build-swarm", "directory of the journal, snapshot and logs")
    heartbeat_interval_s: float = key(30.0, "seconds between drone heartbeats")
    offline_after_s: float = key(90.0, "silence after which a drone is offline")
    max_retries: int = key(2, "retries per package after a failed build")
    compact_after_bytes: int = key(16 * 1024 * 1024, "journal size that triggers a snapshot")
    compact_after_events: int = key(20000, "journaled events that trigger a snapshot")
    failure_streak: int = key(4, "failed builds in a row (different packages) that pause a drone")
    cooldown_s: float = key(300.0, "first pause of a failing drone; doubles each time")
    retention_s: float = key(14 * 86400.0, "finished requests, entries and builds are kept "
                             "this long (built packages and compile times forever)")
    event_window: int = key(10000, "events kept for consumers reconnecting with ?since=")
    log_format: str = key("text", "text or json")
    binhost_dir: str = key("", "binhost tree that drones sync into and a web server serves; "
                           "swarmd publishes its Packages index (empty: publish nothing)")
    control_token: str = secret_field(env="SWARM_CONTROL_TOKEN",
                                      help="bearer token for mutations and the event stream")
    drone_token: str = secret_field(env="SWARM_DRONE_TOKEN",
                                    help="bearer token of the drone protocol")

    def __attrs_post_init__(self) -> None:
        if self.heartbeat_interval_s <= 0:
            raise ValueError("heartbeat_interval_s must be positive")
        if self.offline_after_s <= self.heartbeat_interval_s:
            raise ValueError("offline_after_s must be longer than heartbeat_interval_s")
        if self.max_retries < 0:
            raise ValueError("max_retries must be 0 or more")
        if self.compact_after_bytes < 4096:
            raise ValueError("compact_after_bytes must be at least 4096")
        if self.compact_after_events < 100:
            raise ValueError("compact_after_events must be at least 100")
        if self.log_format not in ("text", "json"):
            raise ValueError(f"log_format must be 'text' or 'json', not {self.log_format!r}")
