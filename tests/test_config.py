"""Config loading: validation messages name the file and the setting, secrets come from the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]


def base() -> dict:
    return {
        "channels": {"web": {"network": "webchat", "side": "client"}, "desk": {"network": "webdesk", "side": "staff"}},
        "employees": {"a": {"name": "A", "staff": {"channel": "desk", "address": "a"}}},
        "desks": {"d": {"clients": ["web"], "members": ["a"]}},
    }


def test_shipped_example_config_is_valid() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    assert cfg.channels["webchat"].side == "client"
    assert set(cfg.employees) >= {"alice", "bob"}
    assert cfg.desk_for_channel("webchat") is not None
    assert cfg.data_dir == (ROOT / "data").resolve()


def test_env_secrets_are_expanded_and_missing_ones_reported() -> None:
    data = base()
    data["channels"]["web"]["token"] = "${RELAY_TEST_TOKEN}"
    cfg = config_from_dict(data, env={"RELAY_TEST_TOKEN": "s3cret"})
    assert cfg.channels["web"].settings["token"] == "s3cret"
    with pytest.raises(ConfigError) as err:
        config_from_dict(data, env={})
    assert "RELAY_TEST_TOKEN is not set" in str(err.value)


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (lambda d: d["channels"]["web"].update(side="both"), "channels.web.side"),
        (lambda d: d["desks"]["d"].update(members=["nobody"]), "no employee named 'nobody'"),
        (lambda d: d["desks"]["d"].update(clients=["desk"]), "is not a client-side channel"),
        (lambda d: d["employees"]["a"]["staff"].update(channel="web"), "is not a staff-side channel"),
        (lambda d: d.update(bogus=1), "config: bogus: unknown setting"),
        (lambda d: d.pop("desks"), "served by no desk"),
    ],
)
def test_invalid_configs_are_reported_with_where_and_why(mutate, expected: str) -> None:
    data = base()
    mutate(data)
    with pytest.raises(ConfigError) as err:
        config_from_dict(data)
    assert expected in str(err.value)


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text("channels:\n  web: {network: webchat\n")
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert str(p) in str(err.value) and ":" in str(err.value)


def test_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(tmp_path / "nope.yaml")
    assert "cannot read config" in str(err.value)
