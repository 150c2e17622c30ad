"""A bare XMPP forwarder with the relay's shape and none of its work: the XMPP benchmark's
second baseline.

It logs in as the desk account and connects as the component, exactly as the relay does,
and forwards each chat body it receives to the employee from `<sender>@<component>`. No
journal, no policy, no confirmation, no stream management: the cheapest thing that can stand
where the relay stands. Its rate against the direct path is the ceiling any relay of this
topology can reach on the machine (every message crosses the server twice and is parsed and
serialised by two more streams), so the benchmark can tell that ceiling apart from relay's own cost.

Run as its own process, like `relay run`: `python -m bench.xmpp_forwarder '<json settings>'`.
It prints "forwarder is running" once both streams are up and runs until SIGTERM.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from typing import Any
from xml.sax.saxutils import escape

from slixmpp import ClientXMPP, ComponentXMPP, Message
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath


async def forward(settings: dict[str, Any]) -> None:
    """Both streams up, then forward until SIGTERM."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    client = ClientXMPP(settings["desk"], settings["password"], sasl_mech="PLAIN",
                        plugin_config={"feature_mechanisms": {"unencrypted_plain": True}})
    client.enable_starttls = False
    client.enable_plaintext = True
    component = ComponentXMPP(settings["component"], settings["secret"], "127.0.0.1", settings["component_port"])
    component.enable_plaintext = True
    employee = escape(settings["employee"], {'"': "&quot;"})
    domain = settings["component"]
    up = [asyncio.Event(), asyncio.Event()]

    def on_message(msg: Message) -> None:
        if msg["type"] != "chat":
            return
        sender = msg["from"].user
        component.send_raw(f'<message to="{employee}" from="{sender}@{domain}" type="chat">'
                           f"<body>{escape(msg['body'])}</body></message>")

    client.register_handler(Callback("forward", MatchXPath("{jabber:client}message/{jabber:client}body"), on_message))
    client.add_event_handler("session_start", lambda _: (client.send_presence(), up[0].set()))
    component.add_event_handler("session_start", lambda _: up[1].set())
    client.connect("127.0.0.1", settings["c2s_port"])
    component.connect()
    await asyncio.wait_for(asyncio.gather(up[0].wait(), up[1].wait()), 15)
    print("forwarder is running", flush=True)
    await stop.wait()
    await asyncio.gather(client.disconnect(wait=0.5), component.disconnect(wait=0.5), return_exceptions=True)


def main() -> None:
    logging.basicConfig(level=logging.ERROR)
    asyncio.run(forward(json.loads(sys.argv[1])))


if __name__ == "__main__":
    main()
