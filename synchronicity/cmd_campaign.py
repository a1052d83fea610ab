"""``synchronicity campaign FILE --out DIR``: rebuild many crates on a network, prove each verdict.

The network is ``--network FILE``, else the one ``network up`` runs for ``--home``, else a
local one this command starts and stops (synchronicity/localnet.py). One loop, one thread:

- **pin**: each line of FILE (synchronicity/campaign.py) becomes a recipe
  (``builder.build.resolve_recipe``: no version = the newest not yanked). A line whose recipe
  cannot be made (no such crate or version, ``cargo generate-lockfile`` fails) is ``failed``
  with that reason and never requested; what keeps any recipe from being made (crates.io or
  Docker out of reach) stops the campaign (exit 3; a rerun resumes).
- **request**: a few jobs at a time (``--in-flight``, default twice the builds a builder runs
  at once, from the witnesses' ``/status``): enough that every builder always has the next job
  queued, few enough that no job waits in a builder's queue past its build deadline. Requests
  go to the builders in turn; one that says 429 or 503 is left alone for its ``Retry-After``.
  A job the log already holds (seen in the log, or answered ``existing``) is followed, never
  requested again.
- **follow**: one cursor over the log's leaves notes the requests, verdicts and diff reports of
  the campaign's jobs; once a quorum-cosigned checkpoint covers a verdict, its proof file is
  written (synchronicity/verdicts.py, as ``rebuild`` writes it), and for a mismatch the diff
  report when a builder logs one (up to 120 s after the verdict).

Everything it learns goes to ``DIR/campaign.json`` before it moves on, so an interrupted
campaign (Ctrl-C, SIGKILL, a reboot) picks up where it was. Exit 0 when every line has an
outcome, whatever it is; 2 for a bad FILE; 3 when the outcomes could not be had.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
import urllib.error
from pathlib import Path

import httpx

from builder import recipe as recipes
from builder.build import resolve_recipe
from builder.image import ensure_build_image
from builder.recipe import Recipe
from logserver.client import LogClient
from logserver.core import canonical_json
from logserver.core.errors import (
    OperationalError,
    RemoteError,
    SynchronicityError,
    UsageError,
)
from logserver.fsutil import atomic_write
from logserver.protocol.entries import DiffReport, Request, Verdict
from logserver.protocol.network import NetworkConfig
from synchronicity.campaign import (
    POLICY_FILE,
    PUBLIC,
    CampaignState,
    CrateState,
    Display,
    count_outcomes,
    read_campaign,
    summary,
    write_summary,
)
from synchronicity.client import (
    BuilderBusy,
    BuilderClient,
    BuilderRefused,
    LoggedEntry,
    logged_entries,
)
from synchronicity.localnet import chosen_network
from synchronicity.verdicts import (
    can_be_explained,
    failure_reasons,
    summarize_reasons,
    write_verdict_proof,
)

DIFF_WAIT_S = 120.0  # how long a mismatch waits for its diff report
PATIENCE_S = 60.0  # a log or all builders out of reach this long: exit 3
TICK_S = 0.3


def campaign(args: argparse.Namespace) -> int:
    if args.in_flight is not None and args.in_flight < 1:
        raise UsageError("--in-flight must be at least 1")
    if args.timeout <= 0:
        raise UsageError("--timeout must be positive")
    specs = read_campaign(Path(args.file))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    display = Display(sys.stderr, len(specs))
    with chosen_network(args.network, args.home, "campaign", display.say) as (config, _):
        state = CampaignState.load(out, config.network_id)
        for spec in specs:
            state.crate(spec)
        state.save()
        run = CampaignRun(config, state, specs, display, in_flight=args.in_flight)
        try:
            run.run(args.timeout)
        finally:
            run.close()
            display.close()
            report = summary([state.crate(spec) for spec in specs], config.network_id)
            report["requests_paced"] = run.paced
            write_summary(out, report)
    print(
        f"{report['total']} crates: {report['reproduced']} reproduced, "
        f"{report['not_reproduced']} not reproduced, {report['failed']} failed; "
        f"summary: {out / 'summary.md'}"
    )
    if args.json:
        print(json.dumps(report, sort_keys=True))
    return 0


def _crate_failure(error: SynchronicityError) -> bool:
    """Whether an error of ``resolve_recipe`` is about the crate (it cannot be made) rather than
    about reaching crates.io or Docker (the campaign cannot go on)."""
    if not isinstance(error, OperationalError) or isinstance(error, RemoteError):
        return not isinstance(error, RemoteError)  # usage, format, verification: the crate's
    cause = error.__cause__
    if isinstance(cause, urllib.error.HTTPError):
        return 400 <= cause.code < 500 and cause.code != 429  # 404: no such crate
    return cause is None  # cargo generate-lockfile failed, a crate too large: the crate's


class CampaignRun:
    """One run of a campaign: pins, requests and follows its crates until each has an
    outcome (the module docstring says how)."""

    def __init__(
        self,
        config: NetworkConfig,
        state: CampaignState,
        specs: list[str],
        display: Display,
        *,
        in_flight: int | None = None,
    ) -> None:
        self.config = config
        self.state = state
        self.crates = [state.crate(spec) for spec in specs]
        self.display = display
        self.policy = config.policy()
        self.log = LogClient(config.log.url, timeout=60.0)
        self.builders = [BuilderClient(w.url) for w in config.witnesses]
        self.busy_until = [0.0] * len(self.builders)
        self.turn = 0
        self.in_flight = in_flight or self._default_in_flight()
        self.cursor: int | None = None
        self.recipes: dict[str, bytes] = {}  # job -> canonical recipe
        self.verdicts: dict[str, LoggedEntry] = {}  # job -> its verdict, not yet concluded
        self.reports: dict[str, str] = {}  # job -> its diff report's SHA-256
        self.explain_by: dict[str, float] = {}  # job -> when to stop waiting for its report
        self.requested_at: dict[str, float] = {}
        self._pinning: threading.Thread | None = None
        self._pinned: list[tuple[CrateState, Recipe | Exception]] = []
        self.failing_since: dict[str, float] = {}  # "log" / "builders" -> since when
        self.paced = 0  # requests a builder asked to make later (429, 503), this run
        self._said_busy = False
        self.last_change = time.monotonic()

    def close(self) -> None:
        self.log.close()
        for builder in self.builders:
            builder.close()

    # ----- the loop ----------------------------------------------------------------------

    def run(self, timeout: float) -> None:
        """Until every crate has an outcome; OperationalError after ``timeout`` seconds in
        which nothing changed."""
        atomic_write(self.state.directory / POLICY_FILE, self.policy.to_bytes(), PUBLIC)
        followed = [c.request_index for c in self.crates if self._in_flight(c)]
        # a request whose answer was lost (the campaign was killed) is in the log after the
        # size it had when the campaign asked: look there before asking again
        asked = [c.asked_at for c in self.crates if c.outcome is None and c.request_index is None]
        starts = [i for i in followed + asked if i is not None]
        if starts:
            self.cursor = min(starts)
        if followed:
            self.display.say(f"• following {len(followed)} requested crates from the last run")
        if any(c.outcome is None and c.job is None for c in self.crates):
            ensure_build_image(progress=lambda line: self.display.say(f"  {line}"))
        while True:
            counts = count_outcomes(self.crates)
            self.display.update(counts, len(self._jobs_in_flight()))
            if counts["pending"] == 0:
                return
            worked = self._scan()
            worked = self._conclude() or worked
            worked = self._pin_one() or worked
            worked = self._request() or worked
            if time.monotonic() - self.last_change > timeout:
                raise OperationalError(
                    f"nothing changed for {timeout:.0f} s with {counts['pending']} crates "
                    "pending; run the campaign again to resume"
                )
            if not worked:
                time.sleep(TICK_S)

    def _changed(self) -> None:
        self.state.save()
        self.last_change = time.monotonic()

    def _in_flight(self, crate: CrateState) -> bool:
        return crate.outcome is None and crate.request_index is not None

    def _jobs_in_flight(self) -> set[str]:
        """The jobs requested whose verdict is not in the log yet (a logged verdict frees its
        place at once: its proof and report are the campaign's work, not the builders')."""
        return {
            c.job
            for c in self.crates
            if self._in_flight(c) and c.job is not None and c.job not in self.verdicts
        }

    def _twins(self, job: str) -> list[CrateState]:
        """The pending lines of ``job`` (two lines may name one release)."""
        return [c for c in self.crates if c.job == job and c.outcome is None]

    def _finished(self, crates: list[CrateState]) -> None:
        self._changed()
        done = count_outcomes(self.crates)
        for crate in crates:
            self.display.finished(crate, done["total"] - done["pending"])

    # ----- pin ---------------------------------------------------------------------------

    def _pin_one(self) -> bool:
        """Take the recipe the pinning thread made, if any; start it on the next line unless
        enough are pinned and waiting. Pinning (the index, the .crate, ``cargo
        generate-lockfile``) takes seconds: it runs beside the loop, which goes on following."""
        worked = False
        if self._pinning is not None and not self._pinning.is_alive():
            self._pinning = None
            pinned, result = self._pinned.pop()
            worked = self._pinned_one(pinned, result)
        waiting = [
            c for c in self.crates if c.outcome is None and c.job and c.request_index is None
        ]
        crate = next((c for c in self.crates if c.outcome is None and c.job is None), None)
        if self._pinning is None and crate is not None and len(waiting) < self.in_flight:
            spec = crate.spec if crate.version is None else f"{crate.name}@{crate.version}"
            target = crate

            def pin() -> None:
                try:
                    result: Recipe | Exception = resolve_recipe(spec, progress=_quiet)
                except Exception as e:  # noqa: BLE001 (the loop re-raises what is not the crate's)
                    result = e
                self._pinned.append((target, result))

            self._pinning = threading.Thread(target=pin, daemon=True, name=f"pin {spec}")
            self._pinning.start()
        return worked

    def _pinned_one(self, crate: CrateState, result: Recipe | Exception) -> bool:
        """Record a line's recipe, or its failure to get one."""
        if isinstance(result, Exception):
            if not isinstance(result, SynchronicityError) or not _crate_failure(result):
                raise result
            crate.finish("failed", f"no recipe: {result}")
            self._finished([crate])
            return True
        job = result.job_id
        self.recipes[job] = result.to_json()
        self.state.save_recipe(job, self.recipes[job])
        crate.version, crate.job = result.version, job
        twin = next((c for c in self.crates if c.job == job and c is not crate), None)
        if twin is not None:  # another line named this release: share what it has
            crate.request_index = twin.request_index
            if twin.outcome is not None:
                crate.finish(twin.outcome, twin.reason, proof=twin.proof, failures=twin.failures)
                crate.diff_report, crate.verdict_index = twin.diff_report, twin.verdict_index
                self._finished([crate])
                return True
        self._changed()
        return True

    # ----- request -----------------------------------------------------------------------

    def _default_in_flight(self) -> int:
        """Twice the builds a builder runs at once (the least of the witnesses' /status)."""
        most: list[int] = []
        for witness in self.config.witnesses:
            try:
                builds = httpx.get(witness.url + "/status", timeout=5.0).json().get("builds", {})
                most.append(int(builds.get("max", 1)))
            except (httpx.HTTPError, ValueError, AttributeError, TypeError):
                continue
        return 2 * max(1, min(most, default=1))

    def _request(self) -> bool:
        """Request pinned jobs while fewer than ``in_flight`` are in flight."""
        if self.cursor is None:  # the log has not been read yet
            return False
        worked = False
        for crate in self.crates:
            if len(self._jobs_in_flight()) >= self.in_flight:
                break
            if crate.outcome is not None or crate.job is None or crate.request_index is not None:
                continue
            builder = self._free_builder()
            if builder is None:
                break
            worked = self._request_on(builder, crate) or worked
        return worked

    def _free_builder(self) -> int | None:
        now = time.monotonic()
        for step in range(len(self.builders)):
            i = (self.turn + step) % len(self.builders)
            if self.busy_until[i] <= now:
                self.turn = i + 1
                return i
        return None

    def _request_on(self, builder: int, crate: CrateState) -> bool:
        job = crate.job
        assert job is not None
        now = time.monotonic()
        if crate.asked_at is None:  # (an earlier, smaller size is as good)
            crate.asked_at = self.cursor
            self.state.save()  # before the request can be logged
        try:
            answer = self.builders[builder].request_job(self._recipe(job))
        except BuilderBusy as e:
            self.busy_until[builder] = now + e.retry_after
            self.paced += 1
            if all(until > now for until in self.busy_until) and not self._said_busy:
                wait = min(self.busy_until) - now
                self.display.say(
                    f"• every builder asks to be asked later (too many requests or jobs "
                    f"waiting); asking again in {wait:.0f} s"
                )
                self._said_busy = True
            return False
        except BuilderRefused as e:
            twins = self._twins(job)
            for twin in twins:
                twin.finish("failed", f"request refused: {e}")
            self._finished(twins)
            return True
        except RemoteError:
            raise
        except OperationalError as e:  # this builder is out of reach: try the others
            self.busy_until[builder] = now + 5.0
            self._failing("builders", f"no builder takes requests: {e}")
            return False
        self.failing_since.pop("builders", None)
        self._said_busy = False
        if answer.job != job:
            raise RemoteError(self.builders[builder].builder_url, f"job {answer.job} for {job}")
        self.requested_at.setdefault(job, now)
        for twin in self._twins(job):
            twin.request_index = answer.index
        crate.requests += 0 if answer.existing else 1
        if self.cursor is None or answer.index < self.cursor:
            self.cursor = answer.index  # (an existing job's verdict may be behind the cursor)
        self._changed()
        return True

    def _recipe(self, job: str) -> bytes:
        """The canonical recipe of ``job``: pinned by this run, kept in DIR, or its request."""
        recipe = self.recipes.get(job) or self.state.recipe(job)
        if recipe is None:
            index = next(c.request_index for c in self.crates if c.job == job)
            if index is None:
                raise OperationalError(f"the recipe of job {job} is lost: remove its line's state")
            leaf = next(iter(logged_entries(self.log, index, index + 1))).entry
            if not isinstance(leaf, Request) or leaf.job != job:
                raise RemoteError(f"the log at {self.log.url}", f"leaf {index} is not {job}")
            recipe = canonical_json.encode(leaf.recipe)
        recipes.from_json(recipe)  # a recipe kept in DIR is checked before it is used
        self.recipes[job] = recipe
        return recipe

    def _failing(self, what: str, message: str) -> None:
        since = self.failing_since.setdefault(what, time.monotonic())
        if time.monotonic() - since > PATIENCE_S:
            raise OperationalError(f"{message} (for {PATIENCE_S:.0f} s)")

    # ----- follow ------------------------------------------------------------------------

    def _scan(self) -> bool:
        """Note the campaign's requests, verdicts and diff reports among the new leaves."""
        try:
            size = self.log.size()
            if self.cursor is None:
                self.cursor = size  # nothing requested yet: only what comes matters
            if size <= self.cursor:
                return False
            jobs = {c.job for c in self.crates if c.outcome is None and c.job is not None}
            for logged in logged_entries(self.log, self.cursor, size):
                if getattr(logged.entry, "job", None) in jobs:
                    self._on_leaf(logged)
            self.cursor = size
        except RemoteError:
            raise
        except OperationalError as e:
            self._failing("log", f"cannot read the log at {self.log.url}: {e}")
            return False
        self.failing_since.pop("log", None)
        return True

    def _on_leaf(self, logged: LoggedEntry) -> None:
        entry = logged.entry
        if isinstance(entry, Request):
            self.recipes.setdefault(entry.job, canonical_json.encode(entry.recipe))
            waiting = [c for c in self._twins(entry.job) if c.request_index is None]
            for crate in waiting:  # the log holds it already: follow it, do not request it
                crate.request_index = logged.index
                if crate.asked_at is not None and crate.asked_at <= logged.index:
                    crate.requests += 1  # the request it made before it was stopped
            if waiting:
                self._changed()
        elif isinstance(entry, Verdict):
            self.verdicts[entry.job] = logged
        elif isinstance(entry, DiffReport):
            self.reports[entry.job] = entry.report_sha256

    def _published_size(self) -> int:
        try:
            checkpoint = self.log.checkpoint()
        except RemoteError:
            raise
        except OperationalError:
            return 0  # nothing published yet, or the log is busy: next time
        return self.policy.verify_checkpoint(checkpoint).size

    def _conclude(self) -> bool:
        """Prove the verdicts a quorum-cosigned checkpoint covers; record their outcomes."""
        if not self.verdicts:
            return False
        published = self._published_size()
        worked = False
        for job, logged in sorted(self.verdicts.items(), key=lambda kv: kv[1].index):
            if logged.index >= published:
                continue
            twins = self._twins(job)
            if not twins:
                del self.verdicts[job]
                continue
            verdict = logged.entry
            assert isinstance(verdict, Verdict)
            reason, diff = "", None
            if verdict.outcome != "reproduced":
                waited = self._explained(job, verdict, twins[0])
                if waited is None:
                    continue  # its diff report may still come
                reason, diff = waited
            name = f"{twins[0].stem}.tlog-proof"
            proof_name: str | None = name
            try:
                write_verdict_proof(
                    self.log,
                    logged,
                    self._recipe(job),
                    self.config.network_id,
                    self.policy,
                    self.state.directory / name,
                )
            except UsageError as e:  # e.g. a bundle larger than a proof file may carry
                proof_name = None
                reason = "; ".join(part for part in (reason, f"no proof file: {e}") if part)
            failures = {} if verdict.outcome == "reproduced" else failure_reasons(self.log, verdict)
            if not reason:
                reason = _why_not(verdict, failures)
            started = self.requested_at.get(job)
            for crate in twins:
                crate.finish(
                    verdict.outcome,
                    reason,
                    proof=proof_name,
                    diff_report=diff,
                    failures=failures,
                    verdict_index=logged.index,
                    seconds=None if started is None else round(time.monotonic() - started, 1),
                )
            del self.verdicts[job]
            self._finished(twins)
            worked = True
        return worked

    def _explained(
        self, job: str, verdict: Verdict, crate: CrateState
    ) -> tuple[str, str | None] | None:
        """(reason, diff report file) of a verdict that is not reproduced; None to wait."""
        if not can_be_explained(verdict):
            return "", None
        report = self.reports.get(job)
        if report is None:
            by = self.explain_by.setdefault(job, time.monotonic() + DIFF_WAIT_S)
            if time.monotonic() < by:
                return None
            groups = len(verdict.groups)
            return f"{groups} different outputs; no diff report within {DIFF_WAIT_S:.0f} s", None
        name = f"{crate.stem}.diff.txt"
        atomic_write(self.state.directory / name, self.log.blob(report), PUBLIC)
        return f"diff report: {name}", name


def _why_not(verdict: Verdict, failures: dict[str, str]) -> str:
    """The reason of a verdict that is neither reproduced nor explained by a diff report."""
    if verdict.outcome == "reproduced":
        return ""
    parts = [f"{len(g.builders)} of the {verdict.threshold} needed agree" for g in verdict.groups]
    if failures:
        parts.append(summarize_reasons(failures))
    return "; ".join(parts) or verdict.outcome


def _quiet(line: str) -> None:
    """Recipe progress is not shown: a campaign says one line per crate."""
