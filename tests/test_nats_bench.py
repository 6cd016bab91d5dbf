"""``coral-graph bench --nats`` runs its workloads and its floor on the same pattern:
a smoke test at tiny sizes (never a speed assertion)."""

from __future__ import annotations

import json

import pytest
from nats_fixtures import NatsServer, nats_server_fixture, needs_nats  # noqa: F401

pytestmark = [needs_nats, pytest.mark.nats]


# Seen once to hang under heavy load (not reproduced): fail in minutes, not after the
# suite's 10-minute timeout.
@pytest.mark.timeout(240)
def test_bench_nats_measures_the_same_pattern_as_its_floor(nats_server: NatsServer) -> None:
    from typer.testing import CliRunner

    from coral_graph.cli import app

    # Through the command line a user types: coral-graph bench --nats ...
    args = ["bench", "--nats", "--nats-url", nats_server.url, "--quick", "--json"]
    res = CliRunner().invoke(app, [*args, "--scaling", "2"])
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout.strip().splitlines()[-1])
    stops = {"pingpong": "answer", "ring": "idle", "fanout": "idle"}
    for name, stop in stops.items():
        fig = out[name]
        assert fig["coral"]["stop_reason"] == stop
        # The same number of deliveries on both sides: the same pattern and sizes.
        assert fig["coral"]["deliveries"] == fig["floor"]["deliveries"] > 0
        assert fig["coral"]["deliveries_per_s"] > 0
        assert fig["ratio"] == pytest.approx(
            fig["coral"]["deliveries_per_s"] / fig["floor"]["deliveries_per_s"]
        )
        # Beside it, the floor that waits for each acknowledgement to be confirmed.
        confirmed = fig["floor_confirmed_acks"]
        assert confirmed["deliveries"] == fig["floor"]["deliveries"]
        assert fig["ratio_confirmed_acks"] == pytest.approx(
            fig["coral"]["deliveries_per_s"] / confirmed["deliveries_per_s"]
        )
    assert set(out["fanout_scaling"]) == {"2"}
