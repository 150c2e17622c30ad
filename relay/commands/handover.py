"""`relay handover EMPLOYEE --to OTHER` and `relay employee deactivate|activate EMPLOYEE`."""

from __future__ import annotations

import argparse

from relay.commands.compliance_common import (add_config_arg, add_json_arg, config_of, default_actor, emit_json,
                                              fail, reporting, write)


def setup_handover(p: argparse.ArgumentParser) -> None:
    add_config_arg(p)
    add_json_arg(p)
    p.add_argument("employee", help="the employee whose conversations move")
    p.add_argument("--to", required=True, help="the employee who takes them over")
    p.add_argument("--conversation", help="only this conversation id")
    p.add_argument("--as", dest="actor", default=None, help="who is doing this (default: your login name)")
    p.add_argument("--reason", default="", help="why (journaled)")
    p.set_defaults(handler=reporting(cmd_handover))


def setup_employee(emp: argparse.ArgumentParser) -> None:
    verbs = emp.add_subparsers(dest="employee_command", metavar="VERB")
    verbs.required = True
    for verb, help_ in (("deactivate", "stop routing to an employee; their conversations go to their desk"),
                        ("activate", "route to an employee again")):
        p = verbs.add_parser(verb, help=help_)
        add_config_arg(p)
        add_json_arg(p)
        p.add_argument("employee")
        p.add_argument("--as", dest="actor", default=None, help="who is doing this (default: your login name)")
        p.add_argument("--reason", default="", help="why (journaled)")
        p.set_defaults(handler=reporting(cmd_deactivate if verb == "deactivate" else cmd_activate))


def _actor(args: argparse.Namespace) -> str:
    actor = args.actor or default_actor()
    if not actor:
        raise fail("say who is doing this: --as NAME")
    return actor


def _print_moves(result: dict) -> None:
    for m in result["moved"]:
        print(f"  {m['conversation']}: {m['previous'] or '-'} -> {m['employee']}; history sent to {m['history_to']};"
              f" client notice {'sent' if m['client_notice'] else 'held by policy'}")


def cmd_handover(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "handover", {"employee": args.employee, "to": args.to, "conversation": args.conversation,
                                        "actor": _actor(args), "reason": args.reason})
    if args.json:
        emit_json(result)
    else:
        print(f"handed over {result['count']} conversation(s) from {args.employee} to {args.to}")
        _print_moves(result)
    return 0


def cmd_deactivate(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "employee.deactivate", {"employee": args.employee, "actor": _actor(args), "reason": args.reason})
    if args.json:
        emit_json(result)
    else:
        print(f"{args.employee} deactivated; {len(result['moved'])} conversation(s) rerouted to the desk;"
              f" {result.get('desk_sockets_closed', 0)} open desk connection(s) closed")
        _print_moves(result)
        for cid in result["waiting_for_an_active_member"]:
            print(f"  {cid}: no other active member on the desk; it goes to the next one who is")
    return 0


def cmd_activate(args: argparse.Namespace) -> int:
    config = config_of(args)
    result = write(config, "employee.activate", {"employee": args.employee, "actor": _actor(args)})
    if args.json:
        emit_json(result)
    else:
        print(f"{args.employee} is active again")
    return 0
