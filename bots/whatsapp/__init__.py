"""WhatsApp Business Cloud API for clients (network `whatsapp`).

`channel` receives the Graph webhook (signature checked before anything is read as JSON) and
sends through the Graph API; `parse` turns a webhook body into Inbound items.
"""

from bots.whatsapp.channel import create

__all__ = ["create"]
