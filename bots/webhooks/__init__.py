"""What the webhook networks (WhatsApp, WeChat, …) share and no single network owns.

`intake` journals before it acknowledges and deduplicates redeliveries; `channel` is the
network-independent half of a webhook channel (mounting, media fetch, sending); `settings`
reads the settings every webhook channel has with the same error messages; `service_window`
tracks the networks' customer-service reply windows.
"""
