"""WeChat Official Account for clients (network `wechat`).

`channel` receives the push (plaintext or safe mode) and answers with customer-service
messages; `parse` turns the XML into Inbound items; `crypto` is safe mode's AES and signatures.
"""

from bots.wechat.channel import create

__all__ = ["create"]
