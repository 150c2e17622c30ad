"""relay: an inline compliant chat relay (journal, policy, forward).

What lives where: the core is `model`, `hub` (with `hub_*`), `routing`, `outbox`, `config`,
`policy/` and `journal/`; above it `compliance/` (the review and retention workflow), `evidence/`
(exports and verification), `commands/` (the `relay` verbs); `app` and `web` assemble one
running relay, handed its admin actions through `actions`. README "Layout" has the tree.
"""

__version__ = "0.1.0"
