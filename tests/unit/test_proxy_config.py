"""rmq-proxy.json parsing: RocketMQ key names, clear errors naming the key."""

from __future__ import annotations

import json

import pytest

from ledgermq.common.config import ConfigError
from ledgermq.proxy.config import ProxyConfig, ignored_keys_in, load_proxy_config, proxy_config_from


def test_defaults_match_rocketmq():
    c = ProxyConfig()
    assert c.grpc_server_port == 8081
    assert c.proxy_mode == "cluster"
    assert c.max_message_size == 4 * 1024 * 1024
    assert c.grpc_max_inbound_message_size == 130 * 1024 * 1024
    assert c.default_invisible_time_mills == 60_000
    assert c.delay_levels_ms()[:3] == [1000, 5000, 10000]
    assert len(c.delay_levels_ms()) == 18


def test_json_file_with_rocketmq_keys(tmp_path):
    path = tmp_path / "rmq-proxy.json"
    path.write_text(
        json.dumps(
            {
                "rocketMQClusterName": "C1",
                "namesrvAddr": "10.0.0.1:9876;10.0.0.2:9876",
                "grpcServerPort": 9081,
                "proxyMode": "cluster",
                "maxMessageSize": 1024,
                "enableProxyAutoRenew": True,
            }
        )
    )
    c = load_proxy_config(path)
    assert (c.rocketmq_cluster_name, c.grpc_server_port, c.max_message_size) == ("C1", 9081, 1024)
    assert c.namesrv_addr == "10.0.0.1:9876;10.0.0.2:9876"
    assert c.enable_proxy_auto_renew is True
    assert ignored_keys_in({"tlsTestModeEnable": "true", "grpcServerPort": "1"}) == [
        "tlsTestModeEnable"
    ]


def test_overrides_win_over_the_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text('{"grpcServerPort": 9081}')
    assert load_proxy_config(path, {"grpcServerPort": "7000"}).grpc_server_port == 7000


@pytest.mark.parametrize(
    ("props", "key", "text"),
    [
        ({"grpcServerPrt": "1"}, "grpcServerPrt", "unknown"),
        ({"grpcServerPort": "eighty"}, "grpcServerPort", "integer"),
        ({"grpcServerPort": "70000"}, "grpcServerPort", "at most"),
        ({"proxyMode": "hybrid"}, "proxyMode", "cluster, local"),
        ({"messageDelayLevel": "1s 5x"}, "messageDelayLevel", "5x"),
        ({"defaultInvisibleTimeMills": "5"}, "defaultInvisibleTimeMills", "at least"),
        ({"namesrvAddr": " "}, "namesrvAddr", "NameServer"),
    ],
)
def test_bad_config_names_the_key(props, key, text):
    with pytest.raises(ConfigError) as err:
        proxy_config_from(props)
    assert err.value.key == key
    assert text in str(err.value)


def test_broken_json_is_a_clear_error(tmp_path):
    path = tmp_path / "rmq-proxy.json"
    path.write_text('{"grpcServerPort": ')
    with pytest.raises(ConfigError, match="invalid JSON"):
        load_proxy_config(path)


def test_cli_refuses_a_bad_config_naming_the_key(tmp_path, capsys):
    from ledgermq.cli.main import main

    path = tmp_path / "rmq-proxy.json"
    path.write_text('{"grpcServerPort": 8081, "namesrvAdr": "127.0.0.1:9876"}')
    assert main(["proxy", "-pc", str(path)]) == 2
    err = capsys.readouterr().err
    assert "ledgermq proxy:" in err and "namesrvAdr" in err and "Traceback" not in err

    path.write_text('{"proxyMode": "local"}')
    assert main(["proxy", "-pc", str(path)]) == 2
    assert "--enable-proxy" in capsys.readouterr().err


def test_cli_prints_the_effective_config(tmp_path, capsys):
    from ledgermq.cli.main import main

    assert main(["proxy", "-n", "10.1.1.1:9876", "-p", "9999", "--print-config"]) == 0
    out = capsys.readouterr().out
    assert "namesrvAddr=10.1.1.1:9876" in out and "grpcServerPort=9999" in out
    assert "rocketMQClusterName=DefaultCluster" in out
