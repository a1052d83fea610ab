"""A campaign's list, state, summary and progress, without a network.

- the list: NAME and NAME@VERSION lines, blank lines and comments ignored, a repeated line
  counted once; a bad line is a usage error naming it (the command exits 2 before it starts
  any network), as is an empty list or a file that is not UTF-8;
- the state: written and read back as it was; a corrupt one is an error naming it, never a
  fresh start; a state of another network is refused;
- the summary: counts that add up, one row per crate in the list's order, a table for people;
- progress: one line per finished crate when stderr is not a terminal, one bar updated in
  place when it is;
- which failures to pin a recipe are the crate's (recorded) and which stop the campaign.
"""

from __future__ import annotations

import doctest
import io
import json
import urllib.error
from email.message import Message
from pathlib import Path

import pytest

from logserver.core.errors import OperationalError, UsageError, VerificationError
from synchronicity import campaign, verdicts
from synchronicity.campaign import (
    CampaignState,
    CrateState,
    Display,
    count_outcomes,
    parse_campaign,
    read_campaign,
    summary,
    summary_markdown,
    write_summary,
)
from synchronicity.cmd_campaign import _crate_failure
from tests.support.procs import run_cli


def test_the_list_ignores_blanks_and_comments_and_repeats() -> None:
    text = "# crates to check\n\nitoa@1.0.11\n  hex  # the newest\nfnv@1.0.7\nitoa@1.0.11\n"
    assert parse_campaign(text) == ["itoa@1.0.11", "hex", "fnv@1.0.7"]
    assert parse_campaign("serde_json@1.0.120-rc.1+build\n") == ["serde_json@1.0.120-rc.1+build"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("itoa\nitoa@\n", "line 2: 'itoa@'"),
        ("itoa 1.0.11\n", "line 1"),
        ("itoa@1.0\n", "line 1"),
        ("../etc/passwd\n", "line 1"),
        ("# nothing\n\n", "lists no crates"),
    ],
)
def test_a_bad_list_is_a_usage_error_naming_the_line(text: str, needle: str) -> None:
    with pytest.raises(UsageError) as caught:
        parse_campaign(text, "crates.txt")
    assert needle in str(caught.value)


def test_a_list_that_is_not_utf8_is_a_usage_error(tmp_path: Path) -> None:
    path = tmp_path / "crates.txt"
    path.write_bytes(b"itoa\n\xff\xfe\n")
    with pytest.raises(UsageError, match="not UTF-8"):
        read_campaign(path)


def test_the_command_exits_2_on_a_bad_list_before_any_network(tmp_path: Path) -> None:
    bad = tmp_path / "crates.txt"
    bad.write_text("itoa\nnot a crate\n")
    home, out = tmp_path / "home", tmp_path / "out"
    done = run_cli("campaign", str(bad), "--home", str(home), "--out", str(out))
    assert done.returncode == 2, done.stderr
    assert "line 2" in done.stderr and "Traceback" not in done.stderr
    assert not home.exists()  # no network was started for it
    missing = run_cli("campaign", str(tmp_path / "none.txt"), "--out", str(out))
    assert missing.returncode == 2 and "none.txt" in missing.stderr


def test_the_state_reads_back_as_written(tmp_path: Path) -> None:
    state = CampaignState.load(tmp_path, "net-1")
    itoa = state.crate("itoa")
    itoa.version, itoa.job, itoa.request_index, itoa.requests = "1.0.11", "a" * 64, 7, 1
    itoa.finish("failed", "b1: E0554", failures={"b1": "E0554"}, verdict_index=12)
    state.crate("fnv@1.0.7")
    state.save()
    state.save_recipe("a" * 64, b'{"name":"itoa"}')
    again = CampaignState.load(tmp_path, "net-1")
    assert again.crates == state.crates
    assert again.recipe("a" * 64) == b'{"name":"itoa"}' and again.recipe("b" * 64) is None
    with pytest.raises(UsageError, match="network 'net-1'"):
        CampaignState.load(tmp_path, "net-2")


@pytest.mark.parametrize(
    "corrupt",
    [
        b"{",
        b"[]",
        b'{"format": "other", "network_id": "n", "crates": []}',
        b'{"format": "synchronicity-campaign/v1", "network_id": "n", "crates": [{"x": 1}]}',
        b'{"format": "synchronicity-campaign/v1", "network_id": "n", '
        b'"crates": [{"spec": "a", "outcome": "maybe"}]}',
    ],
)
def test_a_corrupt_state_is_an_error_not_a_fresh_start(tmp_path: Path, corrupt: bytes) -> None:
    (tmp_path / campaign.STATE_FILE).write_bytes(corrupt)
    with pytest.raises(OperationalError, match=r"campaign state .* is corrupt"):
        CampaignState.load(tmp_path, "n")
    assert (tmp_path / campaign.STATE_FILE).read_bytes() == corrupt


def _crates() -> list[CrateState]:
    done = [CrateState("a@1.0.0", "1.0.0", "1" * 64, 3, 1) for _ in range(3)]
    done[0].finish("reproduced", proof="a-1.0.0.tlog-proof")
    done[1] = CrateState("b", "2.0.0", "2" * 64, 4, 1)
    done[1].finish(
        "not-reproduced", "diff report: b-2.0.0.diff.txt", diff_report="b-2.0.0.diff.txt"
    )
    done[2] = CrateState("c|d")
    done[2].finish("failed", "no recipe: there is no crate c|d")
    return [*done, CrateState("e@0.1.0")]


def test_the_summary_adds_up_in_the_lists_order(tmp_path: Path) -> None:
    crates = _crates()
    report = summary(crates, "net-1")
    assert count_outcomes(crates) == {
        "total": 4,
        "reproduced": 1,
        "not_reproduced": 1,
        "failed": 1,
        "pending": 1,
    }
    assert [c["line"] for c in report["crates"]] == ["a@1.0.0", "b", "c|d", "e@0.1.0"]
    assert report["crates"][1]["crate"] == "b@2.0.0"  # the version it was pinned to
    assert report["crates"][1]["reason"] == "diff report: b-2.0.0.diff.txt"
    write_summary(tmp_path, report)
    assert json.loads((tmp_path / "summary.json").read_text()) == report
    table = summary_markdown(report)
    assert "| b@2.0.0 | not-reproduced | diff report: b-2.0.0.diff.txt |" in table
    assert "no crate c\\|d" in table  # a | in a reason does not break the table
    assert "| e@0.1.0 | pending |" in table
    assert (tmp_path / "summary.md").read_text() == table


def test_progress_is_one_line_per_crate_off_a_terminal_and_a_bar_on_one() -> None:
    crates = _crates()
    plain = io.StringIO()
    display = Display(plain, 4, tty=False)
    display.update(count_outcomes(crates), 1)
    display.finished(crates[1], 2)
    display.say("• a line of its own")
    assert plain.getvalue() == (
        "[2/4] b@2.0.0: not-reproduced (diff report: b-2.0.0.diff.txt)\n• a line of its own\n"
    )
    term = io.StringIO()
    display = Display(term, 4, tty=True)
    display.update(count_outcomes(crates), 1)
    display.finished(crates[0], 1)  # the bar says it
    display.say("• a line of its own")
    display.close()
    shown = term.getvalue()
    assert shown.startswith("\r\x1b[K[##################------] 3/4  reproduced 1")
    assert "not reproduced 1  failed 1  in flight 1  0s" in shown
    # a line of its own clears the bar, then the bar is drawn again under it
    assert "\r\x1b[K• a line of its own\n[###" in shown and shown.endswith("\n")


def _http_error(code: int) -> urllib.error.HTTPError:
    return urllib.error.HTTPError("https://index.crates.io/x", code, "x", Message(), None)


def test_which_recipe_failures_are_the_crates() -> None:
    assert _crate_failure(UsageError("there is no crate nope on crates.io"))
    assert _crate_failure(VerificationError("the crate's checksum differs"))
    assert _crate_failure(OperationalError("cargo generate-lockfile failed: no matching package"))
    not_found = OperationalError("cannot fetch https://index.crates.io/x: 404")
    not_found.__cause__ = _http_error(404)
    assert _crate_failure(not_found)
    down = OperationalError("cannot fetch https://index.crates.io/x: 503")
    down.__cause__ = _http_error(503)
    unreachable = OperationalError("cannot fetch https://index.crates.io/x: timed out")
    unreachable.__cause__ = TimeoutError("timed out")
    assert not _crate_failure(down) and not _crate_failure(unreachable)


def test_the_modules_examples_run() -> None:
    for module in (campaign, verdicts):
        assert doctest.testmod(module).failed == 0
