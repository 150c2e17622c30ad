"""The archive feed as a `relay run` task: relay/evidence/archive.py, alerting through `compliance.alerts`."""

from __future__ import annotations

import time
from typing import Any

from relay.compliance.review import alert
from relay.evidence.archive import run_feed


async def _alert(app: Any, text: str) -> None:
    await alert(app, text, key=f"archive:{time.time_ns()}")


async def run_archive(app: Any) -> None:
    await run_feed(app, _alert)
