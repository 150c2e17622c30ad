"""Compliance policies: YAML files compiled into rules that turn a message into a Verdict."""

from relay.policy.engine import EvalInput, PolicySet, Rule
from relay.policy.errors import PolicyLoadError
from relay.policy.loader import load_policy_dir, load_policy_paths
from relay.policy.rewrite import apply_verdict
from relay.policy.ruletests import TestResult, run_rule_tests
from relay.policy.watcher import PolicyWatcher

__all__ = [
    "EvalInput",
    "PolicyLoadError",
    "PolicySet",
    "PolicyWatcher",
    "Rule",
    "TestResult",
    "apply_verdict",
    "load_policy_dir",
    "load_policy_paths",
    "run_rule_tests",
]
