"""Host variations in the real Docker sandbox (builder/variation.py, spec/builds.md 4.1).

- a crate that embeds the CPU count its build script sees gives other bytes with 1 CPU than
  with all (cpuset and quota are honoured by ``available_parallelism``), and the builtin diff
  names the binary;
- a crate that embeds the year of its build gives other bytes under the shifted clock
  (libfaketime: its build script, and the compiler it runs, work under it);
- a reproducible crate gives the same bytes under all four variations of its job;
- each build's log starts with its variation and what the sandbox saw, and ``variation.json``
  records it beside the manifest, which it does not change.

They need a running Docker engine (they fail, never skip, without one) and, where marked
``network``, crates.io.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest

from builder.build import BuildResult, build_crate, resolve_recipe
from builder.container import host_cpus
from builder.diff import diff_outputs
from builder.image import docker_client
from builder.recipe import Recipe
from builder.sandbox import SandboxLimits
from builder.variation import HOSTNAMES, Variation, assignments
from tests.support.builder_helpers import pack_fixture

pytestmark = [pytest.mark.docker, pytest.mark.slow]

LIMITS = SandboxLimits(memory_bytes=2 << 30, cpus=2, pids=512, target_bytes=1 << 30)


@pytest.fixture(scope="module")
def client() -> Iterator[docker.DockerClient]:
    connection = docker_client()
    yield connection
    connection.close()


def _quiet(line: str) -> None:
    del line


def build(
    recipe: Recipe, out: Path, variation: Variation, client: docker.DockerClient, crate: Path
) -> BuildResult:
    result = build_crate(
        recipe,
        out,
        limits=LIMITS,
        client=client,
        local_crate=crate,
        variation=variation,
        progress=_quiet,
    )
    assert result.ok, result.detail
    return result


def first_line(result: BuildResult) -> str:
    return result.log.decode().splitlines()[0]


def run_binary(result: BuildResult, name: str) -> str:
    done = subprocess.run(
        [str(result.out_dir / "artifacts" / name)], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_crate_embedding_the_cpu_count_differs_between_one_cpu_and_all(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    assert host_cpus(client) >= 2, "this test needs a host with two CPUs or more"
    crate = pack_fixture("cpu-count", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    one = build(recipe, tmp_path / "one", Variation(cpus=1), client, crate)
    every = build(recipe, tmp_path / "all", Variation(), client, crate)
    assert one.output_digest != every.output_digest
    assert run_binary(one, "cpu-count") == "built with 1 CPUs"
    assert run_binary(every, "cpu-count") == "built with 2 CPUs"
    # The log's first line states the variation, how it was applied, and what nproc saw.
    assert first_line(one).startswith("synchronicity: host variation cpus=1,clock=+0d,")
    assert "nproc 1," in first_line(one) and "quota 1, cargo jobs 1" in first_line(one)
    assert "nproc 2," in first_line(every) and "cargo jobs 2" in first_line(every)
    evidence = json.loads((one.out_dir / "variation.json").read_bytes())
    assert evidence["variation"]["cpus"] == 1
    assert evidence["applied"]["cpus"] == 1 and len(evidence["applied"]["cpuset"]) == 1
    report = diff_outputs(
        one.out_dir / "artifacts", every.out_dir / "artifacts", use_diffoscope=False
    )
    assert b"DIFFERENT: cpu-count" in report


def test_a_crate_embedding_the_build_year_differs_under_the_shifted_clock(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    crate = pack_fixture("build-year", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    true = build(recipe, tmp_path / "true", Variation(), client, crate)
    shifted = build(recipe, tmp_path / "shifted", Variation(clock_days=400), client, crate)
    assert true.output_digest != shifted.output_digest
    year = int(run_binary(true, "build-year").removeprefix("built in "))
    later = int(run_binary(shifted, "build-year").removeprefix("built in "))
    assert later in (year + 1, year + 2)
    assert "clock: libfaketime +400d" in first_line(shifted)
    seen = first_line(shifted).split("date ")[1][:4]
    assert int(seen) > int(first_line(true).split("date ")[1][:4])  # date(1) saw it too
    applied = json.loads((shifted.out_dir / "variation.json").read_bytes())["applied"]
    assert applied["faketime"] == "+400d"


@pytest.mark.network
def test_a_reproducible_crate_agrees_under_the_four_variations_of_its_job(
    tmp_path: Path, client: docker.DockerClient
) -> None:
    crate = pack_fixture("hello-bin", tmp_path)
    recipe = resolve_recipe(crate, client=client, progress=_quiet)
    variations = assignments(recipe.job_id, 4)
    assert {v.hostname for v in variations} == set(HOSTNAMES)
    digests = set()
    for index, variation in enumerate(variations):
        result = build(recipe, tmp_path / f"builder-{index}", variation, client, crate)
        digests.add(result.output_digest)
        assert first_line(result).startswith(f"synchronicity: host variation {variation.spec()}")
        assert f"host name {variation.hostname}" in first_line(result)
        manifest = (result.out_dir / "manifest.json").read_bytes()
        assert b"variation" not in manifest  # the evidence is beside it, not in it
    assert len(digests) == 1, digests
