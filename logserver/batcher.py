"""The log's side of the build protocol: it stamps, checks and completes every batch.

In protocol mode each leaf is ``{"entry": <signed entry>, "time": <log ms>}`` (spec/protocol.md).
On the sequencer's thread, for each batch, the ``ProtocolBatcher``:

1. appends the close and verdict entries that are due at the batch's time, signed by the log;
2. applies each submitted signed entry to a copy of the protocol state, refusing (only) those
   that break a rule;
3. appends what became due because of them (e.g. a close once the last builder committed).

The copy replaces the state only once the batch is durable. When no submission arrives, the
sequencer still calls the batcher every tick, so deadlines pass on time.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

from logserver.core import canonical_json, note
from logserver.core.errors import FormatError, VerificationError
from logserver.protocol.fold import fold
from logserver.protocol.rules import ProtocolConfig, ProtocolState
from logserver.protocol.signed import Leaf, SignedEntry, sign_entry
from logserver.storage import LogStore


class ProtocolBatcher:
    """The build protocol's side of each batch, on the sequencer's thread: it stamps every
    submitted entry with the log's time, refuses those that break a rule, and appends the closes
    and verdicts that are due (a copy of the state, adopted once the batch is durable)."""

    def __init__(
        self,
        config: ProtocolConfig,
        signer: note.Signer,
        store: LogStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.state = fold(config, store)
        self._pending: ProtocolState | None = None
        self._signer = signer
        self._clock = clock

    def prepare(self, submissions: Sequence[bytes]) -> tuple[list[bytes], list[int | Exception]]:
        """The leaves of one batch, and per submission its leaf's offset or its refusal."""
        now = max(int(self._clock() * 1000), self.state.last_time)
        trial = self.state.copy()
        leaves: list[bytes] = []

        def append(signed: SignedEntry) -> int:
            leaf = Leaf(signed, now)
            data = leaf.to_bytes()  # FormatError before the state changes if it is too big
            trial.apply(leaf)
            leaves.append(data)
            return len(leaves) - 1

        def append_due() -> None:
            for entry in trial.due_entries(now):
                append(sign_entry(entry, self._signer, trial.config.network_id))

        append_due()
        outcomes: list[int | Exception] = []
        for data in submissions:
            try:
                signed = SignedEntry.from_json(canonical_json.decode_object(data))
                outcomes.append(append(signed))
            except (FormatError, VerificationError) as e:
                outcomes.append(e)
        append_due()
        self._pending = trial
        return leaves, outcomes

    def committed(self) -> None:
        """The last prepared batch is durable: its state becomes the state."""
        if self._pending is not None:
            self.state, self._pending = self._pending, None
