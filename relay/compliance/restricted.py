"""Withholding, event by event, the content of clients under a data-subject erasure request.

An `erasure.requested` event restricts what a client's messages said before it
(`relay.retention.restricted_clients`). Search leaves those messages out and an export withholds
them; a view that lists every event (`relay journal show`) cannot leave events out without
hiding the chain, so it keeps each event's seq, kind, conversation, hashes and digests and
withholds only its content, the same content erasure would take away (`scrub_content`), plus
the inline raw payload, which holds the original text.

Which events: a `message.received` whose client is restricted at its seq (the rule exports use,
`is_restricted`), every event about such a message (verdict, delivery, decision…), a
notice queued for a restricted client before the request (a handover's history copies the
client's messages), and an assignment of a restricted client's conversation before the
request (it carries the client's display name).

The same helpers keep restricted content out of the other views: `relay review list|show`
(`relay.review.withhold_restricted`) and the history a handover sends (`relay.handover`).
"""

from __future__ import annotations

import json
from typing import Any, Mapping

from relay.evidence.collect import Reader, is_restricted
from relay.compliance.erasure_plan import scrub_content

RESTRICTED_NOTE = "restricted: data-subject erasure request"
"""The words the HTML transcript of an export uses for a restricted message."""


def withheld_body(kind: str, body: dict[str, Any]) -> dict[str, Any]:
    """`body` without its content; digests, ids and an erasure tombstone's marker stay. An
    assignment keeps whom it moved where, but not the client's display name."""
    out = scrub_content(kind, body)
    out["restricted"] = RESTRICTED_NOTE
    return out


class RestrictedEvents:
    """Decides which events to withhold; remembers each message's answer, so a journal read in
    seq order needs no extra query, and a filtered one (`--kind policy.verdict`) one per message."""

    def __init__(self, reader: Reader, restricted: Mapping[str, int]) -> None:
        self.reader = reader
        self.restricted = restricted
        self.withheld = 0
        self._messages: dict[str, bool | None] = {}

    async def check(self, seq: int, kind: str, body: dict[str, Any]) -> bool:
        """True when this event's content must be withheld (and counts it)."""
        hit = await self._decide(seq, kind, body)
        self.withheld += hit
        return hit

    async def _decide(self, seq: int, kind: str, body: dict[str, Any]) -> bool:
        if not self.restricted:
            return False
        if kind == "message.received":
            hit = is_restricted(seq, body.get("client"), self.restricted)
            self._messages[str(body.get("id"))] = hit
            return hit
        if kind == "conversation.assigned":  # names the client as they called themselves
            return is_restricted(seq, body.get("client"), self.restricted)
        mid = body.get("message_id")
        if mid is None:
            return False
        if str(mid) not in self._messages:
            self._messages[str(mid)] = await self._lookup(str(mid))
        known = self._messages[str(mid)]
        if known is not None:
            return known
        if kind == "delivery.queued":  # a notice of no journaled message: whom it was about
            return is_restricted(seq, (body.get("out") or {}).get("client"), self.restricted)
        return False

    async def _lookup(self, mid: str) -> bool | None:
        """The journaled message's answer, from its event (None: no such message, e.g. an alert)."""
        rows = await self.reader.fetchall(
            "SELECT e.seq, e.body_json FROM messages m JOIN events e ON e.seq = m.seq WHERE m.id = ?", (mid,))
        if not rows:
            return None
        return is_restricted(int(rows[0]["seq"]), json.loads(rows[0]["body_json"]).get("client"), self.restricted)
