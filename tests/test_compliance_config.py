"""The `reviewers`, `compliance` and `retention` config sections: schema and parsed settings."""

from __future__ import annotations

from pathlib import Path

import pytest

from relay.config import ConfigError, config_from_dict, load_config
from relay.compliance.retention import YEAR, retention_settings
from relay.compliance.review import compliance_settings
from tests.compliance_support import compliance_config

ROOT = Path(__file__).resolve().parents[1]


def test_example_config_sections_parse() -> None:
    cfg = load_config(ROOT / "config.example.yaml")
    s = compliance_settings(cfg.raw)
    assert s.reviewers["erin"].role == "admin" and s.alert_channel == "webdesk" and s.sla_quarantine == 24 * 3600
    r = retention_settings(cfg.raw["retention"], cfg.desks)
    assert r.default.seconds == 6 * YEAR


def test_retention_class_by_desk_and_longest_wins(tmp_path: Path) -> None:
    raw = compliance_config(tmp_path)
    raw["retention"] = {"default": "6y", "classes": {"eu": {"period": "7y", "desks": ["advisors"]},
                                                      "short": {"period": "5y", "channels": ["webchat"]}}}
    cfg = config_from_dict(raw)
    r = retention_settings(cfg.raw["retention"], cfg.desks)
    assert r.for_channel("webchat").name == "eu"


@pytest.mark.parametrize("section,value,message", [
    ("reviewers", {"zed": {"role": "boss"}}, "reviewers.zed.role: 'boss' is not one of"),
    ("reviewers", {"zed": {"name": "Zed"}}, "reviewers.zed: 'role' is a required property"),
    ("compliance", {"alerts": {"channel": "webdesk"}}, "compliance.alerts: 'to' is a required property"),
    ("compliance", {"sla": {"quarantine": "a day"}}, "compliance.sla.quarantine: 'a day' does not match"),
    ("compliance", {"escalate": True}, "compliance.escalate: unknown setting"),
    ("retention", {"classes": {"x": {"channels": ["webchat"]}}}, "retention.classes.x: 'period' is a required property"),
    ("retention", {"default": "forever"}, "retention.default: 'forever' does not match"),
])
def test_bad_sections_are_reported_by_path(tmp_path: Path, section: str, value: object, message: str) -> None:
    raw = compliance_config(tmp_path)
    raw[section] = value
    with pytest.raises(ConfigError) as err:
        config_from_dict(raw)
    assert any(message in p for p in err.value.problems), err.value.problems
