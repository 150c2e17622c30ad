"""The one error a policy load raises, carrying every problem found as `file:line: reason`."""

from __future__ import annotations


class PolicyLoadError(Exception):
    """A policy set could not be loaded; `errors` lists each problem as `file:line: reason`."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("\n".join(errors) if errors else "policy load failed")
        self.errors = list(errors)
