"""Two costs slixmpp pays per stanza that relay cannot afford at thousands of messages a second.

1. Escaping. slixmpp serialises every stanza (every send, and relay's copy of every received
   stanza for the journal) through `slixmpp.xmlstream.tostring.escape`, which maps a text one
   character at a time in a Python generator: a profile of `relay run` under the XMPP
   benchmark had it as the largest single cost on the main thread. `str.translate` with the
   same table produces the same string in C. `install()` swaps it in for the non-CDATA case
   (the only one slixmpp uses by default); tests/test_xmpp_fastxml.py checks the two agree.

2. One system call per stanza. slixmpp writes each stanza to the socket as it is sent, so a
   burst of 40 messages and their barrier ping is 41 `send()` calls here and 41 reads on the
   server. `BufferedWrites` collects what is sent during one event-loop step and writes it
   once at the end of the step; the bytes and their order are unchanged.
"""

from __future__ import annotations

import asyncio
import importlib
from typing import Any

_tostring = importlib.import_module("slixmpp.xmlstream.tostring")  # the module; the package re-exports a function of that name

_ORIGINAL_ESCAPE = _tostring.escape
_TABLE = str.maketrans({"&": "&amp;", "<": "&lt;", ">": "&gt;", "'": "&apos;", '"': "&quot;"})


def escape(text: str, use_cdata: bool = False) -> str:
    """`slixmpp.xmlstream.tostring.escape`, same output, without the per-character loop."""
    if use_cdata:
        return _ORIGINAL_ESCAPE(text, use_cdata)
    return text.translate(_TABLE)


def install() -> None:
    """Make slixmpp's serialiser use `escape` (idempotent)."""
    _tostring.escape = escape


class BufferedWrites:
    """Mixin for a slixmpp stream class: `send_raw` queues, one write per event-loop step.

    Everything slixmpp sends goes through `send_raw`, so the order on the wire is the order
    of the calls. The buffer is written at the end of the current step (`call_soon`), before
    the loop waits for I/O again, so nothing is delayed by more than the step that sent it.
    On a lost connection the unwritten bytes are dropped with the transport, like bytes in
    the transport's own buffer: relay's confirmations (barrier ping, stream management) never
    counted them as delivered.
    """

    transport: Any
    loop: asyncio.AbstractEventLoop

    def send_raw(self, data: str | bytes) -> None:
        if not self.transport:
            super().send_raw(data)  # type: ignore[misc]  # raises NotConnectedError
            return
        if isinstance(data, str):
            data = data.encode("utf-8")
        pending: list[bytes] | None = getattr(self, "_relay_pending", None)
        if pending:
            pending.append(data)
            return
        self._relay_pending = [data]
        self.loop.call_soon(self._relay_write)

    def _relay_write(self) -> None:
        pending, self._relay_pending = self._relay_pending, []
        if pending and self.transport:
            super().send_raw(b"".join(pending))  # type: ignore[misc]
