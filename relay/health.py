"""Named checks and gauges that tasks above the core report into, shown by `/healthz` and `/metrics`.

The core cannot import the workflow that runs, say, the scheduled journal verification; the
workflow writes its result here instead, and the relay's own routes show whatever is set.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


@dataclass(frozen=True)
class Check:
    ok: bool
    detail: str
    at: float


@dataclass
class Health:
    checks: dict[str, Check] = field(default_factory=dict)
    gauges: dict[str, tuple[float, str]] = field(default_factory=dict)
    """Prometheus name -> (value, help text)."""

    def set_check(self, name: str, ok: bool, detail: str, at: float) -> None:
        if not _NAME.match(name):
            raise ValueError(f"check name {name!r}: use lower-case letters, digits and _")
        self.checks[name] = Check(ok, detail, at)

    def set_gauge(self, name: str, value: float, help_: str) -> None:
        if not _NAME.match(name):
            raise ValueError(f"gauge name {name!r}: use lower-case letters, digits and _")
        self.gauges[name] = (float(value), help_)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks.values())

    def to_dict(self) -> dict[str, Any]:
        return {name: {"ok": c.ok, "detail": c.detail, "at": c.at} for name, c in sorted(self.checks.items())}

    def metric_lines(self) -> list[str]:
        lines: list[str] = []
        if self.checks:
            lines += ["# HELP relay_check_ok 1 when the named check last passed, 0 when it failed.",
                      "# TYPE relay_check_ok gauge"]
            lines += [f'relay_check_ok{{check="{name}"}} {int(c.ok)}' for name, c in sorted(self.checks.items())]
        for name, (value, help_) in sorted(self.gauges.items()):
            shown = int(value) if value.is_integer() else value
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} gauge", f"{name} {shown}"]
        return lines
