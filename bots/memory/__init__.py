"""In-process channels (network `memory`), for benchmarks, embedding and the hub's tests."""

from bots.memory.channel import MemoryChannel, create

__all__ = ["MemoryChannel", "create"]
