"""Chat network adapters: one package per network (`network: NAME` in a config picks `bots/NAME`,
or the module `bots.base.NETWORKS` names), each only translating its wire format.

`base` is the Channel seam every adapter implements; `send_order` keeps a window of sends in
order; `webhooks` holds what the webhook networks share.
"""
