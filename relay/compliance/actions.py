"""The compliance workflow's admin actions, in one table (as `relay.commands.VERBS` lists verbs).

CLI writes reach these through the running relay's admin API, or the relay opened offline
(`relay.admin.run_action`); the console calls them in-process with the authenticated reviewer.
To add an action: an `async fn(app, params) -> dict` in a module, and a row below.
"""

from __future__ import annotations

from relay.actions import ActionTable, Workflow

ACTIONS = ActionTable({
    "review.release": "relay.compliance.release:release",
    "review.reject": "relay.compliance.release:reject",
    "review.decide": "relay.compliance.review:decide_action",
    "review.sweep": "relay.compliance.review:sweep_action",
    "handover": "relay.compliance.handover:handover_action",
    "employee.deactivate": "relay.compliance.handover:deactivate_action",
    "employee.activate": "relay.compliance.handover:activate_action",
    "retention.run": "relay.compliance.holds_actions:retention_run",
    "hold.add": "relay.compliance.holds_actions:hold_add",
    "hold.release": "relay.compliance.holds_actions:hold_release",
    "erase.request": "relay.compliance.holds_actions:erase_request",
    "evidence.prepare": "relay.evidence.prepare:prepare",
    "journal.verify": "relay.compliance.verification:verify_action",
    "journal.replicate": "relay.compliance.replication:replicate_action",
})

WORKFLOW = Workflow(ACTIONS, tasks=("relay.compliance.review:run_sweeper",
                                    "relay.compliance.verification:run_verifier",
                                    "relay.compliance.replication:run_replicator",
                                    "relay.compliance.archive_feed:run_archive"),
                    reopened="relay.compliance.handover:reopened_history")
"""What `relay run` hands the app: these actions, the review queue's SLA sweeper, the scheduled
journal verification, the WORM copy, the archive feed, and the history an employee gets in a
conversation's reopened topic."""
