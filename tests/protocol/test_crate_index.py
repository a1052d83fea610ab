"""The crate index, a pure fold of protocol leaves, and the monitor's audit of a log's answers.

The answers are what ``GET /crates/<name>[/<version>]`` serves; a monitor folds the same leaves
and must get byte-identical answers, so the fold is checked to be independent of how the leaves
arrive (one at a time, in chunks, all at once) and of anything but the leaves below ``size``.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from builder.choice import semver_key
from logserver.core import canonical_json
from logserver.core.errors import FormatError, RemoteError, VerificationError
from logserver.protocol import crate_index, entries, signed
from logserver.protocol.crate_index import (
    MAX_ROWS,
    MAX_VERSIONS,
    ROWS_PER_VERSION,
    CrateIndex,
    check_crate_name,
    check_version,
    rows_of,
    version_key,
    versions_of,
)
from tests.support.crate_fixtures import AGAIN, SCENARIO
from tests.support.dashboard_fixtures import Plan, ProtocolFixture, recipe
from witness.monitor import IndexAudit

NETWORK = "example.test"


def _scenario() -> tuple[ProtocolFixture, list[bytes]]:
    fixture = ProtocolFixture(network_id=NETWORK)
    first, _ = fixture.builds(0, SCENARIO)
    again, _ = fixture.builds(len(first), AGAIN, features=["again"])
    return fixture, first + again


def _folded(leaves: list[bytes], chunk: int | None = None) -> CrateIndex:
    index = CrateIndex()
    step = chunk or max(len(leaves), 1)
    for start in range(0, len(leaves), step):
        index.add_leaves(start, leaves[start : start + step])
    return index


def _verdict_indexes(leaves: list[bytes]) -> list[int]:
    return [
        i
        for i, data in enumerate(leaves)
        if isinstance(signed.Leaf.parse(data).entry.entry, entries.Verdict)
    ]


def test_versions_newest_first_and_verdicts_in_log_order() -> None:
    _, leaves = _scenario()
    index = _folded(leaves)
    assert index.names() == ["broken", "hello-tool", "hidden", "libonly"]
    answer = index.crate_answer("hello-tool", len(leaves), NETWORK)
    assert answer is not None
    assert [v["version"] for v in answer["versions"]] == ["1.1.0-rc.1", "1.0.0", "0.9.0"]
    assert answer["versions_total"] == 3 and answer["size"] == len(leaves)
    hidden = index.version_answer("hidden", "1.0.0", len(leaves), NETWORK)
    assert hidden is not None
    rows = rows_of(hidden)
    assert [row.outcome for row in rows] == ["reproduced", "not-reproduced"]
    assert rows[0].index < rows[1].index and rows[0].job != rows[1].job
    for row in rows:  # the request leaf holds the recipe of the job
        request = signed.Leaf.parse(leaves[row.request]).entry.entry
        assert isinstance(request, entries.Request) and request.job == row.job
        assert row.source == "crates.io"
    assert index.crate_answer("nothing", len(leaves), NETWORK) is None
    assert index.version_answer("hidden", "9.9.9", len(leaves), NETWORK) is None


def test_only_leaves_below_size_count() -> None:
    _, leaves = _scenario()
    index = _folded(leaves)
    last_verdict = _verdict_indexes(leaves)[-1]
    before = index.version_answer("hidden", "1.0.0", last_verdict, NETWORK)
    assert before is not None and [r.outcome for r in rows_of(before)] == ["reproduced"]
    assert before["size"] == last_verdict
    assert index.crate_answer("hello-tool", 3, NETWORK) is None  # requests only: no verdict


def test_the_fold_does_not_depend_on_how_leaves_arrive() -> None:
    _, leaves = _scenario()
    whole = _folded(leaves)
    for chunk in (1, 7):
        parts = _folded(leaves, chunk)
        for size in (0, 30, len(leaves) - 1, len(leaves)):
            for name in whole.names():
                assert parts.crate_answer(name, size, NETWORK) == whole.crate_answer(
                    name, size, NETWORK
                )
    again = CrateIndex()
    touched = again.add_leaves(0, leaves)
    assert ("hidden", "1.0.0") in touched and ("broken", "0.1.0") in touched
    assert again.add_leaves(0, leaves[:10]) == set()  # leaves already folded change nothing
    with pytest.raises(Exception, match="before leaf"):
        again.add_leaves(len(leaves) + 1, leaves[:1])


def test_answers_are_bounded() -> None:
    fixture = ProtocolFixture(network_id=NETWORK)
    many_versions: list[tuple[str, str, Plan]] = [
        ("wide", f"1.{minor}.0", "reproduced") for minor in range(MAX_VERSIONS + 3)
    ]
    leaves, _ = fixture.builds(0, many_versions, step_ms=1)
    for wave in range(MAX_ROWS + 2):
        more, _ = fixture.builds(len(leaves), [("deep", "1.0.0", "failed")], 1, [f"f{wave}"])
        leaves += more
    index = _folded(leaves)
    wide = index.crate_answer("wide", len(leaves), NETWORK)
    assert wide is not None and wide["versions_total"] == MAX_VERSIONS + 3
    assert len(wide["versions"]) == MAX_VERSIONS
    assert wide["versions"][0]["version"] == f"1.{MAX_VERSIONS + 2}.0"  # SemVer, not text
    deep = index.version_answer("deep", "1.0.0", len(leaves), NETWORK)
    assert deep is not None and deep["verdicts_total"] == MAX_ROWS + 2
    assert len(deep["verdicts"]) == MAX_ROWS
    assert deep["verdicts"][-1]["index"] == _verdict_indexes(leaves)[-1]  # the newest kept
    summary = index.crate_answer("deep", len(leaves), NETWORK)
    assert summary is not None and len(summary["versions"][0]["verdicts"]) == ROWS_PER_VERSION
    assert len(canonical_json.encode(summary)) < 1 << 20


def test_requests_without_a_valid_crate_are_not_indexed() -> None:
    fixture = ProtocolFixture(network_id=NETWORK)
    builder = fixture.builders["builder-1"]
    leaves = []
    for name, version in [("../etc", "1.0.0"), ("ok", "1.0"), ("ok", "01.0.0")]:
        request = entries.Request(recipe(name, version))
        leaves.append(signed.Leaf(signed.sign_entry(request, builder, NETWORK), 0).to_bytes())
    leaves.append(b"not a leaf")
    index = _folded(leaves)
    assert index.names() == [] and index.skipped == 4 and index.size == 4


@pytest.mark.parametrize(
    "versions",
    [
        ["1.0.0", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta",
         "1.0.0-beta.2", "1.0.0-beta.11", "1.0.0-rc.1", "0.9.10", "0.10.0", "2.0.0+meta"],
    ],
)  # fmt: skip
def test_version_precedence_is_the_builders(versions: list[str]) -> None:
    assert sorted(versions, key=version_key) == sorted(versions, key=semver_key)
    assert sorted(versions, key=version_key)[-1] == "2.0.0+meta"
    assert crate_index.is_prerelease("1.0.0-rc.1") and not crate_index.is_prerelease("1.0.0")


@pytest.mark.parametrize("name", ["", "1abc", "a" * 65, "a/b", "a.b", "é", "a b", "a\x00"])
def test_bad_names_are_refused(name: str) -> None:
    with pytest.raises(FormatError):
        check_crate_name(name)


@pytest.mark.parametrize("version", ["", "1", "1.0", "01.0.0", "1.0.0-", "1.0.0+", "1." * 70])
def test_bad_versions_are_refused(version: str) -> None:
    with pytest.raises(FormatError):
        check_version(version)


def test_good_names_and_versions() -> None:
    assert check_crate_name("A-b_c9") == "A-b_c9"
    assert check_version("1.2.3-rc.1+build.5") == "1.2.3-rc.1+build.5"


# ------------------------------------------------------------------------- the monitor's audit


def _audit(leaves: list[bytes], serve: Any) -> IndexAudit:
    audit = IndexAudit(NETWORK, serve)
    audit.advance(0, leaves)
    return audit


def test_an_honest_index_passes_the_audit() -> None:
    _, leaves = _scenario()
    truth = _folded(leaves)
    asked: list[tuple[str, str | None, int]] = []

    def honest(name: str, version: str | None, size: int) -> dict[str, Any] | None:
        asked.append((name, version, size))
        if version is None:
            return truth.crate_answer(name, size, NETWORK)
        return truth.version_answer(name, version, size, NETWORK)

    audit = _audit(leaves, honest)
    assert audit.audit(len(leaves)) == 4
    assert {(n, v) for n, v, _ in asked if v} == {
        ("broken", "0.1.0"), ("hello-tool", "0.9.0"), ("hello-tool", "1.0.0"),
        ("hello-tool", "1.1.0-rc.1"), ("hidden", "1.0.0"), ("libonly", "2.0.0"),
    }  # fmt: skip
    asked.clear()
    audit.audit(len(leaves))  # nothing new: the crates are asked again in turn
    assert {n for n, v, _ in asked} == {"broken", "hello-tool", "hidden", "libonly"}


def _lying(leaves: list[bytes]) -> Any:
    """A log that hides the newest verdict of hidden@1.0.0 (not-reproduced)."""
    truth = _folded(leaves)

    def serve(name: str, version: str | None, size: int) -> dict[str, Any] | None:
        if version is None:
            answer = copy.deepcopy(truth.crate_answer(name, size, NETWORK))
            if answer is not None and name == "hidden":
                item = answer["versions"][0]
                item["verdicts"] = item["verdicts"][:-1]
                item["verdicts_total"] -= 1
            return answer
        answer = copy.deepcopy(truth.version_answer(name, version, size, NETWORK))
        if answer is not None and name == "hidden":
            answer["verdicts"], answer["verdicts_total"] = answer["verdicts"][:-1], 1
        return answer

    return serve


def test_a_hidden_not_reproduced_verdict_is_caught() -> None:
    _, leaves = _scenario()
    with pytest.raises(VerificationError, match=r"hidden@1\.0\.0: the log lists 1 verdict") as e:
        _audit(leaves, _lying(leaves)).audit(len(leaves))
    assert "not-reproduced" in str(e.value) and "\n" not in str(e.value)


def test_other_lies_are_caught_and_garbage_is_the_logs_fault() -> None:
    _, leaves = _scenario()
    truth = _folded(leaves)

    def missing(name: str, version: str | None, size: int) -> dict[str, Any] | None:
        return None if name == "libonly" else truth.crate_answer(name, size, NETWORK)

    with pytest.raises(VerificationError, match=r"libonly@2\.0\.0: the log lists no verdict"):
        _audit(leaves, missing).audit(len(leaves))

    def other_network(name: str, version: str | None, size: int) -> dict[str, Any] | None:
        found = truth.crate_answer(name, size, "another") if version is None else None
        return found or truth.version_answer(name, version or "", size, NETWORK)

    with pytest.raises(VerificationError, match="differs from the leaves' in network"):
        _audit(leaves, other_network).audit(len(leaves))

    def garbage(name: str, version: str | None, size: int) -> dict[str, Any] | None:
        return {"versions": "nope"}

    with pytest.raises(RemoteError, match="crate index answer"):
        _audit(leaves, garbage).audit(len(leaves))


def test_versions_of_reads_an_answer() -> None:
    _, leaves = _scenario()
    answer = _folded(leaves).crate_answer("hidden", len(leaves), NETWORK)
    assert answer is not None
    [(version, reproduced, rows)] = list(versions_of(answer))
    assert (version, reproduced, [r.outcome for r in rows]) == (
        "1.0.0",
        1,
        ["reproduced", "not-reproduced"],
    )
