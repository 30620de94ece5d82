"""The broker's periodic REGISTER_BROKER to the NameServer, and the clamp on its period."""

from __future__ import annotations

import asyncio
import itertools

import pytest

from ledgermq.broker.broker import Broker
from ledgermq.broker.config import BrokerConfig
from ledgermq.namesrv.config import NamesrvConfig
from ledgermq.namesrv.server import NameServer
from ledgermq.remoting.codes import RequestCode

pytestmark = pytest.mark.timeout(60)


def _config(tmp_path, **overrides) -> BrokerConfig:
    props = {
        "brokerName": "broker-r",
        "listenPort": "0",
        "brokerIP1": "127.0.0.1",
        "storePathRootDir": str(tmp_path / "store"),
        "mappedFileSizeCommitLog": str(4 * 1024 * 1024),
        **overrides,
    }
    return BrokerConfig.from_properties(props)


@pytest.mark.parametrize(
    ("configured", "used"),
    [("10", 10_000), ("30000", 30_000), ("120000", 60_000), ("0", 10_000)],
)
def test_register_period_is_kept_as_configured_and_clamped_at_use(tmp_path, configured, used):
    cfg = _config(tmp_path, registerNameServerPeriod=configured)
    assert cfg.register_name_server_period == int(configured)  # the file's value is kept
    broker = Broker(cfg, host="127.0.0.1")
    assert broker.register_period_ms == used  # RocketMQ: max(10000, min(period, 60000))


def test_register_period_floor_is_a_code_seam_not_a_config_key(tmp_path):
    cfg = _config(tmp_path, registerNameServerPeriod="50")
    assert Broker(cfg, host="127.0.0.1", register_period_floor_ms=20).register_period_ms == 50
    # The ceiling still applies with a lowered floor.
    cfg = _config(tmp_path, registerNameServerPeriod="90000")
    assert Broker(cfg, host="127.0.0.1", register_period_floor_ms=20).register_period_ms == 60_000


async def test_broker_re_registers_with_the_namesrv_every_period(tmp_path):
    namesrv = NameServer(NamesrvConfig(user_home=str(tmp_path / "ns")), host="127.0.0.1", port=0)
    registrations: list[float] = []
    enough = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_handler = namesrv._register_broker

    def counting_handler(conn, request):
        registrations.append(loop.time())
        if len(registrations) >= 5:
            enough.set()
        return real_handler(conn, request)

    namesrv.dispatcher.register(RequestCode.REGISTER_BROKER, counting_handler)
    await namesrv.start()
    cfg = _config(
        tmp_path,
        namesrvAddr=f"127.0.0.1:{namesrv.port}",
        registerNameServerPeriod="100",
    )
    broker = Broker(cfg, host="127.0.0.1", register_period_floor_ms=100)
    try:
        await broker.start()
        # One registration at startup, then one per period with nothing else happening.
        await asyncio.wait_for(enough.wait(), 20)
        gaps = [b - a for a, b in itertools.pairwise(registrations[1:])]
        # Not faster than the period (no busy loop); a loaded machine may be slower.
        assert min(gaps) >= 0.08, gaps
    finally:
        await broker.stop()
        await namesrv.stop()
