"""relay: an inline compliant chat relay (journal, policy, forward)."""

__version__ = "0.1.0"
