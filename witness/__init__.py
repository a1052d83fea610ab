"""The builder-witness node: HotStuff (DiemBFT v4) consensus, cosigning, validation, building.

- :mod:`witness.consensus` — the sans-I/O consensus core (standard library, PyNaCl and
  ``logserver.core`` only);
- :mod:`witness.cosign` — what a witness co-signs: the add-checkpoint rules, their HTTP surface
  and the one persistent store of "never two roots for one size";
- :mod:`witness.sim` — the deterministic simulator of faulty networks;
- :mod:`witness.node` drives the consensus core over HTTP (:mod:`witness.app`,
  :mod:`witness.envelope`), keeps a verified :mod:`witness.mirror` of the log, checks new
  entries (:mod:`witness.validation`) and runs the build :mod:`witness.worker`;
- :mod:`witness.monitor` follows a log and recomputes every verdict.

A node is started by ``synchronicity witness run --config network.json --key KEY --data DIR``;
in Python, in outline::

    node = WitnessNode(network, CosignatureSigner(name, seed), seed, Path("data"))
    node.start()                          # consensus, peers, cosignatures, builds
    serve(witness.app.create_app(node))   # POST /consensus, /request, /status, /metrics
    node.stop()
"""

__all__ = [
    "app",
    "consensus",
    "cosign",
    "envelope",
    "mirror",
    "monitor",
    "node",
    "sim",
    "validation",
    "worker",
]
