"""The log's side of the build protocol: it stamps, checks and completes every batch.

In protocol mode each leaf is ``{"entry": <signed entry>, "time": <log ms>}`` (spec/protocol.md).
On the sequencer's thread, for each batch, the ``ProtocolBatcher``:

1. appends the close and verdict entries that are due at the batch's time, signed by the log;
2. applies each submitted signed entry to a copy of the protocol state, refusing (only) those
   that break a rule;
3. appends what became due because of them (e.g. a close once the last builder committed).

The copy replaces the state only once the batch is durable. When no submission arrives, the
sequencer still calls the batcher every tick, so deadlines pass on time.

No single entry stops the log: a submission whose processing fails in an unexpected way is
refused alone (the batch is prepared again without it), and a due entry that cannot be logged
(the rules bound verdicts so that none should exist) is skipped with an error in the log and
counted in ``unloggable``, while everything else goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence

from logserver.core import canonical_json, note
from logserver.core.errors import FormatError, OperationalError, VerificationError
from logserver.protocol.entries import Close, Verdict
from logserver.protocol.fold import fold
from logserver.protocol.rules import ProtocolConfig, ProtocolState
from logserver.protocol.signed import Leaf, SignedEntry, sign_entry
from logserver.storage import LogStore

log = logging.getLogger(__name__)


class _SubmissionFailed(Exception):
    """Processing one submission raised unexpectedly: it is refused, the batch made again."""

    def __init__(self, position: int, refusal: Exception) -> None:
        super().__init__(str(refusal))
        self.position = position
        self.refusal = refusal


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
        # Due entries the log could not log, as (type, job): each is reported once. A metric.
        self.unloggable: set[tuple[str, str]] = set()

    def prepare(self, submissions: Sequence[bytes]) -> tuple[list[bytes], list[int | Exception]]:
        """The leaves of one batch, and per submission its leaf's offset or its refusal."""
        refused: dict[int, Exception] = {}
        while True:  # at most once more per submission that fails unexpectedly
            try:
                return self._prepare(submissions, refused)
            except _SubmissionFailed as failed:
                refused[failed.position] = failed.refusal

    def _prepare(
        self, submissions: Sequence[bytes], refused: dict[int, Exception]
    ) -> tuple[list[bytes], list[int | Exception]]:
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
            skipped_jobs: set[str] = set()  # a job's verdict cannot follow a skipped close
            for entry in trial.due_entries(now):
                if entry.job in skipped_jobs:
                    continue
                try:
                    append(sign_entry(entry, self._signer, trial.config.network_id))
                except (FormatError, VerificationError) as e:
                    skipped_jobs.add(entry.job)
                    self._skip(entry, e)

        append_due()
        outcomes: list[int | Exception] = []
        for position, data in enumerate(submissions):
            if position in refused:
                outcomes.append(refused[position])
                continue
            try:
                signed = SignedEntry.from_json(canonical_json.decode_object(data))
                outcomes.append(append(signed))
            except (FormatError, VerificationError) as e:
                outcomes.append(e)
            except Exception as e:  # a bug must not refuse the others' entries
                log.exception("a submission could not be processed; it alone is refused")
                refusal = OperationalError(f"the log could not process this entry: {e!r}")
                raise _SubmissionFailed(position, refusal) from e
        append_due()
        self._pending = trial
        return leaves, outcomes

    def _skip(self, entry: Close | Verdict, error: Exception) -> None:
        key = (type(entry).__name__.lower(), entry.job)
        if key not in self.unloggable:
            self.unloggable.add(key)
            log.error(
                "a due %s cannot be logged and is skipped: %s",
                key[0],
                error,
                extra={"job": entry.job},
            )

    def committed(self) -> None:
        """The last prepared batch is durable: its state becomes the state."""
        if self._pending is not None:
            self.state, self._pending = self._pending, None
