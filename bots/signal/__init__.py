"""Signal for clients (network `signal`) through signal-cli's JSON-RPC daemon.

`rpc` is the newline-delimited JSON-RPC 2.0 connection (TCP socket, reconnecting);
`parse` turns `receive` envelopes into Inbound items; `channel` delivers them and sends;
`settings` reads the config block.
"""

from bots.signal.channel import create

__all__ = ["create"]
