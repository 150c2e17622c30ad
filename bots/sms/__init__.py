"""SMS and MMS through Twilio for clients (network `sms`).

`channel` receives Twilio's signed messaging webhooks and status callbacks and sends through
the Messages API; `parse` turns a webhook form into Inbound items; `segments` holds the SMS
segment rules; `optout` the STOP/START/HELP keywords; `settings` the config block.
"""

from bots.sms.channel import create

__all__ = ["create"]
