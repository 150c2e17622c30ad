"""The compliance workflow, on top of the core (the core never imports it).

- `review`: the supervision queue, decisions, SLA sweeps and alerts; `release`: release/reject of
  held messages through the hub.
- `retention`: retention classes and periods; `holds`: legal holds and erasure requests;
  `erasure_plan`: what an erasure takes (tombstones that keep digests); `erasure`: applying it.
- `handover`: moving an employee's conversations (with history) to a colleague, (de)activation.
- `backtest`: a policy set replayed over the journal, and the shadow report.
- `restricted`: withholding content under an erasure request in every view.
- `actions`: the table of admin actions and tasks the app is handed (`holds_actions` has the
  retention and hold actions).
"""
