"""The WebSocket fan-out benchmark's client side, on a few clients: every event reaches every
client, and the kernel receive stamps the latency figure is made of are really obtained.

No timing assertions (only plausibility): this checks the measuring code, not the gateway.
"""

from __future__ import annotations

import os

import trio

os.environ.setdefault("PORTAGE_OVERRIDE_EPREFIX", "/")

from bench.ws_fanout import run  # noqa: E402


def test_every_event_reaches_every_client_with_a_kernel_stamp() -> None:
    clients = 5
    # A real gateway process and real sockets: trio.run, not the tests' (virtual-time) trio mode.
    result = trio.run(run, clients, 20.0, 1.0)

    assert result["connected"] == clients
    assert result["failures_total"] == 0, result["failures"]
    assert result["events"] >= 10  # about 20 published in the 1 s window
    assert result["events_delivered_to_anybody"] == result["events"]
    assert result["deliveries"] == result["deliveries_expected"] == clients * result["events"]
    assert result["order_errors"] == 0
    assert result["snapshot_messages"] == clients * 5  # 4 drone_status + 1 queue_update each

    # The headline latency is made of kernel receive stamps, one per delivery.
    assert result["latency_clock"].startswith("kernel")
    assert result["kernel_stamps"] == result["deliveries"]
    assert result["kernel_stamps_missing"] == 0
    for figures in (result["latency_ms"], result["latency_ms_exact_stamps"],
                    result["app_latency_ms"]):
        assert 0 <= figures["min"] <= figures["p50"] <= figures["p99"] <= figures["max"] < 5000
    # The socket had the bytes before the client's task read them.
    assert result["latency_ms"]["min"] <= result["app_latency_ms"]["min"]
    assert result["gateway_cpu_pct"] >= 0
    assert result["clients_cpu_pct"] >= 0
