"""The largest verdict fits one leaf (issue 9): the log never owes an entry it cannot log.

The worst case a network config allows: MAX_WITNESSES builders whose names are as long as
allowed and made of the characters JSON escapes (``"`` and ``\\``), a log name of 255 such
characters, leaf indexes and times of 16 digits, and every way of listing builders in a
verdict: all agreeing (each name twice), each in a group of its own, all failed with the
longest reason, all lying (evidence), all silent (missing), and a mix.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable

import pytest

from logserver.core import note
from logserver.core.cosignature import CosignatureSigner
from logserver.core.errors import FormatError, UsageError
from logserver.protocol.entries import (
    MAX_LEAF_BYTES,
    MAX_REASON_BYTES,
    MAX_TIME_MS,
    Close,
    Commit,
    Request,
    Reveal,
    Verdict,
    compute_commitment,
    failure_digest,
)
from logserver.protocol.fold import protocol_config
from logserver.protocol.network import (
    MAX_BUILDER_NAME_BYTES,
    MAX_WITNESSES,
    LogInfo,
    NetworkConfig,
    WitnessInfo,
)
from logserver.protocol.rules import ProtocolConfig, ProtocolState, max_verdict_leaf_bytes
from logserver.protocol.signed import Leaf, sign_entry

N = MAX_WITNESSES  # 3f + 1 with f = 33
LOG_KEY = note.Signer('"' * 255, b"L" * 32)
LONGEST_REASON = "\x01" * MAX_REASON_BYTES  # 6 bytes each in JSON: \u0001


def worst_name(i: int) -> str:
    name = ('"\\' * MAX_BUILDER_NAME_BYTES)[: MAX_BUILDER_NAME_BYTES - 2] + f"{i:02d}"
    assert len(name) == MAX_BUILDER_NAME_BYTES
    return name


NAMES = [worst_name(i) for i in range(N)]
SEEDS = {name: hashlib.sha256(name.encode()).digest() for name in NAMES}
KEYS = {name: note.Signer(name, SEEDS[name]) for name in NAMES}


def worst_network() -> NetworkConfig:
    witnesses = tuple(
        WitnessInfo(name, CosignatureSigner(name, SEEDS[name]).vkey, f"http://w{i}")
        for i, name in enumerate(NAMES)
    )
    config = NetworkConfig(
        "n" * 128, LogInfo(LOG_KEY.name, LOG_KEY.vkey, "http://log"), witnesses, f=(N - 1) // 3
    )
    return NetworkConfig.parse(config.to_json())  # a config the parser accepts


def digest(label: str) -> str:
    return hashlib.sha256(label.encode()).hexdigest()


Behaviour = Callable[[int], str]  # builder index -> "agree", "own", "fail", "lie" or "silent"


def play(config: ProtocolConfig, behaviour: Behaviour) -> tuple[Leaf, Leaf]:
    """One job of every builder, at the end of time and of the leaf indexes: the close and
    verdict leaves the log owes, signed and stamped."""
    state = ProtocolState(config)
    state.size = MAX_TIME_MS - 10 * N  # leaf indexes of 16 digits
    now = MAX_TIME_MS - config.build_deadline_ms - config.reveal_deadline_ms - 10

    def append(entry: Request | Commit | Reveal | Close | Verdict, key: note.Signer) -> Leaf:
        leaf = Leaf(sign_entry(entry, key, config.network_id), now)
        leaf.to_bytes()  # raises FormatError over 65,535 bytes
        state.apply(leaf)
        return leaf

    request = Request({"name": "worst", "version": "1.0.0"})
    append(request, KEYS[NAMES[0]])
    outputs: dict[str, str] = {}
    for i, name in enumerate(NAMES):
        kind = behaviour(i)
        outputs[name] = (
            digest("agreed")
            if kind == "agree"
            else failure_digest(LONGEST_REASON)
            if kind == "fail"
            else digest(f"own {i}")
        )
        commitment = compute_commitment(request.job, name, outputs[name], digest(name))
        append(Commit(request.job, name, commitment), KEYS[name])
    (close,) = state.due_entries(now)
    close_leaf = append(close, LOG_KEY)
    for i, name in enumerate(NAMES):
        kind, nonce = behaviour(i), digest(name)
        if kind == "silent":
            continue
        if kind == "fail":
            reveal = Reveal(request.job, name, nonce, failure=LONGEST_REASON)
        else:
            output = digest(f"a lie {i}") if kind == "lie" else outputs[name]
            reveal = Reveal(request.job, name, nonce, output_digest=output, manifest_sha256=output)
        append(reveal, KEYS[name])
    now = MAX_TIME_MS  # the reveal deadline: the verdict is due
    (verdict,) = state.due_entries(now)
    return close_leaf, append(verdict, LOG_KEY)


def mix(i: int) -> str:
    return "agree" if i < 67 else ["own", "fail", "lie", "silent"][i % 4]


@pytest.mark.parametrize(
    ("behaviour", "outcome"),
    [
        (lambda i: "agree", "reproduced"),
        (lambda i: "own", "not-reproduced"),
        (lambda i: "fail", "failed"),
        (lambda i: "lie", "failed"),
        (lambda i: "silent", "failed"),
        (mix, "reproduced"),
    ],
    ids=["all-agree", "all-own-groups", "all-failed", "all-evidence", "all-missing", "mixed"],
)
def test_the_largest_verdicts_fit_a_leaf(behaviour: Behaviour, outcome: str) -> None:
    config = protocol_config(worst_network())
    bound = max_verdict_leaf_bytes(config.log.name, config.builders)
    assert bound <= MAX_LEAF_BYTES
    close, verdict = play(config, behaviour)
    assert isinstance(verdict.entry.entry, Verdict) and verdict.entry.entry.outcome == outcome
    assert len(close.to_bytes()) < len(verdict.to_bytes()) <= bound <= MAX_LEAF_BYTES
    assert json.loads(verdict.to_bytes())["entry"]["threshold"] == 67


def test_the_bound_is_not_far_above_the_worst_case() -> None:
    # All agreeing (each name twice) is the largest verdict; the bound adds, per builder, the
    # largest object it could be listed in on top of its name in ``agreeing``.
    config = protocol_config(worst_network())
    _, verdict = play(config, lambda i: "agree")
    assert len(verdict.to_bytes()) > 0.8 * max_verdict_leaf_bytes(config.log.name, NAMES)
    # The figure spec/protocol.md gives for the largest configuration.
    assert max_verdict_leaf_bytes('"' * 255, ['"' * 128] * 100) == 63_109


def test_builders_whose_verdicts_could_overflow_are_refused() -> None:
    builders = {name: key.verifier() for name, key in KEYS.items()}
    config = protocol_config(worst_network())
    longer = {
        f"{name}{'x' * 127}": note.Signer(f"{name}{'x' * 127}", SEEDS[name]) for name in NAMES
    }
    with pytest.raises(UsageError, match="over the leaf limit"):
        ProtocolConfig(
            config.log,
            {name: key.verifier() for name, key in longer.items()},
            1,
            1,
            network_id="n",
        )
    assert ProtocolConfig(config.log, builders, 1, 1, network_id="n").threshold == 67


def test_a_protocol_network_bounds_builder_names() -> None:
    doc = json.loads(worst_network().to_json())
    name = "w" * (MAX_BUILDER_NAME_BYTES + 1)
    doc["witnesses"][0] |= {"name": name, "vkey": CosignatureSigner(name, b"x" * 32).vkey}
    with pytest.raises(FormatError, match="longer than 128"):
        NetworkConfig.parse(json.dumps(doc).encode())
    doc["entries"] = "open"  # no builders there: witness names are only key names
    assert NetworkConfig.parse(json.dumps(doc).encode()).witnesses[0].name == name
    doc["entries"] = "protocol"
    doc["witnesses"][0] |= {"name": "é", "vkey": CosignatureSigner("é", b"x" * 32).vkey}
    with pytest.raises(FormatError, match="witness name"):
        NetworkConfig.parse(json.dumps(doc).encode())
    doc["witnesses"] += doc["witnesses"][:3]
    doc["f"] = 34
    with pytest.raises(FormatError):
        NetworkConfig.parse(json.dumps(doc).encode())  # more than MAX_WITNESSES
