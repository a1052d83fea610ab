"""The build protocol, pure: log entries, their rules, the fold, the network config, verdicts.

- :mod:`logserver.protocol.entries` — entry values (request, commit, reveal, close, verdict,
  diff report) and commitments; :mod:`logserver.protocol.entry_json` their JSON form;
  :mod:`logserver.protocol.signed` signed entries and the log's leaf envelope;
- :mod:`logserver.protocol.rules` — which leaves may be appended, and the closes and verdicts
  the log must add (the same code runs in the log, every witness and every monitor);
- :mod:`logserver.protocol.fold` — folding a log's leaves into the rules' state;
- :mod:`logserver.protocol.network` — the network config; :mod:`logserver.protocol.verdict_proof`
  — the consumer's offline check of a verdict proof file;
- :mod:`logserver.protocol.requester` — the signature a requester of the network config puts on
  a request to a witness.

Only the standard library, PyNaCl, :mod:`logserver.core` and this package are imported here
(a test checks it); spec/protocol.md is the normative description.

A worked example: one builder is asked for a build and never commits; at the build deadline
the log owes a close and a ``failed`` verdict.

>>> from logserver.core import note
>>> from logserver.protocol import entries, rules, signed
>>> log_key = note.Signer("example.com/log", bytes(32))
>>> builder = note.Signer("builder-1", bytes([1]) * 32)
>>> config = rules.ProtocolConfig(
...     log=log_key.verifier(), builders={"builder-1": builder.verifier()},
...     build_deadline_ms=1000, reveal_deadline_ms=1000, network_id="example")
>>> state = rules.ProtocolState(config)
>>> demo = entries.Request({"name": "demo", "version": "1.0.0"})
>>> request = signed.sign_entry(demo, builder, config.network_id)
>>> state.apply(signed.Leaf(request, time_ms=0))
>>> [type(due).__name__ for due in state.due_entries(999)]
[]
>>> close, verdict = state.due_entries(1000)
>>> (close.reason, verdict.outcome)
('deadline', 'failed')
"""

__all__ = [
    "entries",
    "entry_json",
    "fold",
    "network",
    "requester",
    "rules",
    "signed",
    "verdict_proof",
]
