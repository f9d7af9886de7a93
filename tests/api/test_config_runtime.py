"""PUT /v1/config while a settlement runner runs: the settlement mode (and the ctv arity) are
fixed until a restart (409 ``mode-change-needs-restart``, nothing changed); the other knobs
still apply. Without a runner, musig2 needs its [settlement.musig2] table (422)."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from payouts.node.kernel import KernelNode
from payouts.service import PoolService
from payouts.settlement.ctv import CtvParams
from payouts.settlement.modes import SettlementMode
from payouts.settlement.runner import SettlementRunner
from sv2.domain_messages import mode_to_message
from tests.api.conftest import assert_problem, bearer


@pytest.fixture
def node() -> Iterator[KernelNode]:
    with KernelNode() as n:
        yield n


def served_client(service: PoolService, runner: SettlementRunner) -> TestClient:
    """The API as ``payouts serve`` builds it: with its settlement runner."""
    return TestClient(create_app(service, runner=runner, rate_limit=None))


def test_mode_change_is_refused_while_a_runner_runs(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    runner = SettlementRunner(service, node, interval=3600.0)  # coinbase mode, from settings
    client = served_client(service, runner)
    h = bearer(token("admin"))
    before = client.get("/v1/config", headers=h).json()
    for patch in ({"mode": "ctv"}, {"mode": "musig2", "fee_bps": 100}):
        body = assert_problem(client.put("/v1/config", json=patch, headers=h), 409,
                              "mode-change-needs-restart")
        assert body["mode"] == "coinbase"
        assert client.get("/v1/config", headers=h).json() == before  # nothing changed
    # The same mode, the arity (unused in coinbase mode) and the fee still change at runtime.
    r = client.put("/v1/config", json={"mode": "coinbase", "fee_bps": 150,
                                       "ctv_fanout_arity": 4}, headers=h)
    assert r.status_code == 200, r.text
    assert (r.json()["fee_bps"], r.json()["ctv_fanout_arity"]) == (150, 4)
    assert service.settings.pool.fee_bps == 150


def test_ctv_arity_is_part_of_the_running_mode(
    service: PoolService, node: KernelNode, token: Callable[..., str]
) -> None:
    service.settings.distribution.mode = "ctv"
    runner = SettlementRunner(service, node, interval=3600.0)
    client = served_client(service, runner)
    assert runner.mode == SettlementMode("ctv", CtvParams(arity=16))
    h = bearer(token("admin"))
    assert_problem(client.put("/v1/config", json={"ctv_fanout_arity": 4}, headers=h), 409,
                   "mode-change-needs-restart")
    assert service.settings.distribution.ctv_fanout_arity == 16
    # The fee rate is committed in every fan-out tx too.
    assert_problem(client.put("/v1/config", json={"ctv_fee_rate": 2}, headers=h), 409,
                   "mode-change-needs-restart")
    assert service.settings.distribution.ctv_fee_rate == 0
    r = client.put("/v1/config", json={"ctv_fanout_arity": 16, "max_sigops": 300}, headers=h)
    assert r.status_code == 200 and service.settings.distribution.max_sigops == 300
    assert r.json()["ctv_fee_rate"] == 0


def test_ctv_fee_rate_setting_reaches_the_jds_and_the_runner(
    service: PoolService, node: KernelNode
) -> None:
    """One constructor (DistributionSettings.ctv_params) for both JD sides' announcement and the
    runner's rebuilt tree: a fee rate set in the file is in both."""
    from payouts.settlement.modes import SettlementMode as Mode

    service.settings.distribution.mode = "ctv"
    service.settings.distribution.ctv_fee_rate = 3
    runner = SettlementRunner(service, node, interval=3600.0)
    assert runner.mode == Mode("ctv", CtvParams(arity=16, fee_rate=3))
    assert mode_to_message(runner.mode, 1).ctv_fee_rate == 3


def test_musig2_without_its_parameters_is_refused(
    client: TestClient, service: PoolService, token: Callable[..., str]
) -> None:
    h = bearer(token("admin"))
    body = assert_problem(client.put("/v1/config", json={"mode": "musig2"}, headers=h), 422,
                          "invalid-config")
    assert "settlement.musig2" in body["detail"]
    assert service.settings.distribution.mode == "coinbase"
