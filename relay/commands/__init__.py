"""`relay` subcommands. VERBS is the one table of top-level verbs, so `relay --help` needs no
command module: a verb's module (with what it imports: aiohttp, the evidence exporters, the
backtester, ...) is imported only when argparse picks that verb (`relay.cli`).

To add a verb: a `setup_<verb>(parser)` function in a module here that adds the verb's arguments
and `set_defaults(handler=...)`, and a row below.
"""

from __future__ import annotations

from typing import NamedTuple


class Verb(NamedTuple):
    help: str  # the one line `relay --help` shows
    setup: str  # "module:function" in relay.commands; the function adds the verb's arguments to its parser


# In the order `relay --help` lists them.
VERBS: dict[str, Verb] = {
    "handover": Verb("hand an employee's conversations (with history) to a colleague", "handover:setup_handover"),
    "employee": Verb("deactivate or reactivate an employee", "handover:setup_employee"),
    "hash-password": Verb("print a scrypt hash of a password (read from stdin, or prompted on a terminal)",
                          "hash_password:setup"),
    "journal": Verb("verify, show, search, export or rebuild the journal", "journal:setup"),
    "policy": Verb("check, test and try compliance policy files", "policy:setup"),
    "retention": Verb("erase content past its retention period (not under legal hold)", "retention:setup_retention"),
    "hold": Verb("legal holds: nothing under hold is erased", "retention:setup_hold"),
    "erase": Verb("data-subject erasure request: restrict now, erase when retention ends", "retention:setup_erase"),
    "review": Verb("supervision: list, show and decide flagged, quarantined and sampled messages", "review:setup"),
    "run": Verb("run the relay (web chat, channels, journal, policies)", "run:setup"),
}
