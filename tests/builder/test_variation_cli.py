"""``synchronicity build --variation SPEC`` and ``--variation-of BUILDER``: one builder's host
conditions reproduced on this machine (spec/builds.md 4.1, spec/cli.md).

The choice of variation is checked without Docker; one real build through the command shows
that ``--variation-of`` gives the bytes of an explicit ``--variation`` of the same conditions,
and that the build log says which variation it was.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from builder.variation import Variation, assignments, variation_of
from logserver.core.errors import FormatError, UsageError
from synchronicity.cmd_build import variation_choice
from synchronicity.cmd_network import init_network
from tests.support.builder_helpers import pack_fixture
from tests.support.paths import ROOT

JOB = "ab" * 32


def args(**given: str | None) -> argparse.Namespace:
    values: dict[str, str | None] = dict.fromkeys(("variation", "variation_of", "job", "network"))
    values.update(given)
    return argparse.Namespace(**values)


@pytest.fixture
def network(tmp_path: Path) -> tuple[Path, list[str]]:
    config = init_network(tmp_path / "net", ports=[18700, 18701, 18702, 18703, 18704])
    return tmp_path / "net" / "network.json", [w.name for w in config.witnesses]


def test_no_variation_option_is_the_plain_build() -> None:
    assert variation_choice(args(), JOB) is None


def test_an_explicit_variation_is_parsed_strictly() -> None:
    chosen = variation_choice(args(variation="cpus=1,clock=+3d,hostname=builder-b"), JOB)
    assert chosen == Variation(1, 3, "builder-b")
    with pytest.raises(FormatError):
        variation_choice(args(variation="cpus=none"), JOB)


def test_a_builders_variation_is_recomputed_from_the_network_config(
    network: tuple[Path, list[str]],
) -> None:
    path, names = network
    for position, name in enumerate(names):
        expected = variation_of(JOB, name, names)
        assert variation_choice(args(variation_of=name, network=str(path)), JOB) == expected
        by_position = args(variation_of=str(position), network=str(path))
        assert variation_choice(by_position, JOB) == expected
    other = "cd" * 32  # --job: another job's assignment
    chosen = variation_choice(args(variation_of=names[2], job=other, network=str(path)), JOB)
    assert chosen == variation_of(other, names[2], names)


def test_misuse_is_a_usage_error(network: tuple[Path, list[str]], tmp_path: Path) -> None:
    path, names = network
    for bad in (
        args(variation="cpus=1", variation_of=names[0], network=str(path)),
        args(job=JOB),
        args(network=str(path)),
        args(variation_of="witness-9.nowhere", network=str(path)),
        args(variation_of=names[0], network=str(tmp_path / "missing.json")),
        args(variation_of=names[0], network=str(path), job="not-a-job"),
    ):
        with pytest.raises(UsageError):
            variation_choice(bad, JOB)


def _build(crate: Path, out: Path, *options: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "synchronicity", "build", str(crate), "--out", str(out), *options],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
        timeout=1200,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return next(line for line in done.stdout.splitlines() if line.startswith("output digest:"))


@pytest.mark.docker
@pytest.mark.slow
def test_variation_of_a_builder_gives_its_bytes(
    network: tuple[Path, list[str]], tmp_path: Path
) -> None:
    from builder.build import resolve_recipe  # only this test needs Docker

    path, names = network
    crate = pack_fixture("cpu-count", tmp_path)
    job = resolve_recipe(crate, progress=lambda line: None).job_id
    position = next(i for i, v in enumerate(assignments(job, 4)) if v.cpus == 1)
    varied = variation_of(job, names[position], names)
    of_builder = _build(
        crate, tmp_path / "of", "--variation-of", names[position], "--network", str(path)
    )
    explicit = _build(crate, tmp_path / "explicit", "--variation", varied.spec())
    plain = _build(crate, tmp_path / "plain")
    assert of_builder == explicit != plain  # 1 CPU against all: other bytes
    first = (tmp_path / "of" / "build.log").read_text().splitlines()[0]
    assert first.startswith(f"synchronicity: host variation {varied.spec()}")
