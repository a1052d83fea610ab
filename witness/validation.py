"""The witness's check of new log entries before it votes: the build protocol's rules.

The validator keeps the protocol state folded over the longest prefix of the mirror it has
checked. Validity is prefix-closed (a prefix of a valid log is valid), and the mirror is one
linear history, so checking entries [start, end) only ever means checking what lies beyond the
checked prefix. Any leaf that breaks a rule, including a close or verdict that differs from
what the rules compute, makes the check fail.

The clock bounds (``validate_leaves``): no leaf more than ``MAX_SKEW_MS`` ahead of this
witness's clock; and the proposal's new leaves (beyond ``start``, its certified parent) must
not be more than ``MAX_SKEW_MS`` behind the clock at this validator's last acceptance, so a
log that freezes its clock is refused. Leaves folded at start-up and the parent's leaves (a
quorum certified them) are not judged behind, nor is the first proposal after a start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from logserver.core.errors import SynchronicityError
from logserver.protocol.fold import fold
from logserver.protocol.rules import ProtocolConfig, ProtocolState, validate_leaves
from logserver.protocol.signed import Leaf
from logserver.storage import LogStore

log = logging.getLogger(__name__)
MAX_SKEW_MS = 30_000


class ProtocolValidator:
    """A witness's check of new log entries against the build protocol, from the longest
    prefix of its mirror it already checked."""

    def __init__(
        self,
        config: ProtocolConfig,
        store: LogStore,
        checked: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        # Entries up to ``checked`` (what consensus committed) were checked before; the mirror
        # may hold more that no vote has covered yet, and those are checked when proposed.
        self._state: ProtocolState = fold(config, store, checked)
        self._clock = clock
        self._lock = threading.Lock()
        self._last_accepted_ms: int | None = None  # clock at the last accepted new leaves

    @property
    def state(self) -> ProtocolState:
        return self._state

    def check(self, store: LogStore, start: int, end: int) -> bool:
        """Whether entries up to ``end`` obey the protocol; [start, end) are the proposal's
        new leaves, those before ``start`` its parent's (certified by a quorum already)."""
        with self._lock:
            checked = self._state.size
            if end <= checked:
                return True
            now = int(self._clock() * 1000)
            first_new = max(checked, start)
            try:
                parents = [Leaf.parse(data) for data in store.entries(checked, first_new)]
                new = [Leaf.parse(data) for data in store.entries(first_new, end)]
                state = validate_leaves(self._state, parents, now, MAX_SKEW_MS)
                state = validate_leaves(
                    state, new, now, MAX_SKEW_MS, last_accepted_ms=self._last_accepted_ms
                )
            except SynchronicityError as e:
                log.warning("entries break the build protocol", extra={"reason": str(e)})
                return False
            self._state = state
            if new:  # certified leaves alone are no news of the log's clock
                self._last_accepted_ms = now
            return True
