"""``synchronicity rebuild``: the main job, end to end.

Without ``--network`` it runs a local network on this machine (one log and four
builder-witnesses as separate processes on 127.0.0.1, keys and LMDB data under ``--home``,
reused on the next run). It pins the crate into a recipe (bootstrapping the build image if
needed), asks a builder to log the request, shows each builder's commit and reveal and the
verdict as they reach the log, waits for a witness-quorum checkpoint that covers the verdict,
and writes the verdict proof file, the trust policy and the reproduced artifacts, which it then
verifies offline. Progress goes to stderr. Exit 0: reproduced; 1: not reproduced or failed;
3: an operational failure.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from builder.build import resolve_recipe
from builder.recipe import Features, Recipe
from logserver.client import LogClient
from logserver.core import proof
from logserver.protocol.entries import DiffReport, Reveal, Verdict
from logserver.protocol.network import NetworkConfig
from logserver.protocol.verdict_proof import (
    VerdictBundle,
    check_artifact,
    verify_verdict,
    verify_verdict_proof,
)
from synchronicity.client import (
    BuilderClient,
    find_request,
    follow,
    logged_entries,
    wait_published,
)
from synchronicity.cmd_build import docs_rs_hint, feature_choice
from synchronicity.cmd_network import NETWORK_FILE, REQUESTER_FILE, add_requester, read_requester
from synchronicity.localnet import LocalNetwork


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _local_network(home: Path) -> LocalNetwork:
    directory = home / "network"
    if (directory / NETWORK_FILE).exists():
        _say(f"• reusing the local network in {directory}")
        add_requester(directory)  # a network made before requesters: give it the user's key
        return LocalNetwork(directory)
    _say(f"• creating a local network (a log and 4 builder-witnesses) in {directory}")
    return LocalNetwork.create(directory)


def rebuild(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}
    started = time.monotonic()
    local = None
    if args.network:
        config = NetworkConfig.parse(Path(args.network).read_bytes())
        network_dir = Path(args.network).parent
    else:
        local = _local_network(Path(args.home))
        config, network_dir = local.config, local.dir
        _say("• starting the log and the builder-witnesses on 127.0.0.1")
        local.start()
    if args.requester_key is None:
        args.requester_key = network_dir / REQUESTER_FILE
    timings["network_s"] = time.monotonic() - started
    try:
        return _run(args, config, timings)
    finally:
        if local is not None:
            local.stop()


def _run(args: argparse.Namespace, config: NetworkConfig, timings: dict[str, float]) -> int:
    spec: str | Path = args.spec
    if str(args.spec).endswith(".crate"):
        spec = Path(args.spec)
    # Anyone may ask for a crates.io release; a local .crate needs a requester's signature.
    requester = read_requester(Path(args.requester_key), config) if isinstance(spec, Path) else None
    t = time.monotonic()
    recipe: Recipe = resolve_recipe(
        spec, features=feature_choice(args), pre=args.pre, progress=lambda line: _say(f"  {line}")
    )
    timings["recipe_s"] = time.monotonic() - t
    _say(f"• recipe for {recipe.spec} pinned: job {recipe.job_id}")
    policy = config.policy()
    with (
        LogClient(config.log.url, timeout=60.0) as client,
        BuilderClient(config.witnesses[0].url, requester=requester) as builder,
    ):
        if isinstance(spec, Path):
            builder.upload_crate(recipe.crate_sha256, spec.read_bytes())
        t = time.monotonic()
        job, found = recipe.job_id, find_request(client, recipe.job_id)
        if found is None:
            job, index = builder.request(recipe)
        else:
            _say(f"• the log already holds this job (request at index {found}); following it")
            index = found
        _, logged = follow(client, job, index, args.timeout, lambda line: _say(f"  {line}"))
        timings["build_and_protocol_s"] = time.monotonic() - t
        verdict = logged.entry
        assert isinstance(verdict, Verdict)
        t = time.monotonic()
        checkpoint = wait_published(client, logged.index, policy, 120)
        timings["publish_s"] = time.monotonic() - t
        size = policy.verify_checkpoint(checkpoint).size
        _say(f"• verdict {verdict.outcome}, in a checkpoint of size {size} cosigned by a quorum")
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        stem = f"{recipe.name}-{recipe.version}"
        policy_path = out / f"{stem}.policy"
        policy_path.write_bytes(policy.to_bytes())
        proof_path = out / f"{stem}.tlog-proof"
        raw = proof.TlogProof.parse(client.tlog_proof(logged.index))
        result: dict[str, object] = {
            "crate": recipe.spec,
            "job": job,
            "outcome": verdict.outcome,
            "verdict_index": logged.index,
            "agreeing": list(verdict.agreeing),
            "proof": str(proof_path),
            "policy": str(policy_path),
        }
        if verdict.outcome != "reproduced" or verdict.output_digest is None:
            # The recipe rides along (no manifest), so the proof says which crate it is about;
            # only a recipe too large for the extra data leaves the verdict leaf alone.
            extra = VerdictBundle(
                logged.leaf.to_bytes(), b"", recipe.to_json(), config.network_id
            ).to_extra()
            if len(extra) > proof.MAX_EXTRA_BYTES:
                extra = logged.leaf.to_bytes()
            data = proof.TlogProof(raw.index, raw.hashes, raw.checkpoint, extra).to_bytes()
            if extra != logged.leaf.to_bytes():
                verify_verdict(data, policy)  # never keep a proof that does not verify
            proof_path.write_bytes(data)
            t = time.monotonic()
            result["failures"] = _failures(client, verdict)
            chosen_by_crate = feature_choice(args) is None and recipe.selection != Features()
            if verdict.outcome == "failed" and chosen_by_crate:
                _say(f"• {docs_rs_hint(recipe.selection)}")
            report = None
            if verdict.outcome != "failed" and len(verdict.groups) >= 2:  # else none can come
                report = _wait_for_diff_report(client, job, logged.index)
            if report is not None:
                url = f"{config.log.url}/blob/{report}"
                (out / f"{stem}.diff.txt").write_bytes(client.blob(report))
                _say(f"• diff report: {url} (saved as {out / f'{stem}.diff.txt'})")
                result["diff_report"] = url
            timings["explain_s"] = time.monotonic() - t
            _finish(args, result, timings)
            return 1
        manifest = client.blob(verdict.output_digest)
        bundle = VerdictBundle(
            logged.leaf.to_bytes(), manifest, recipe.to_json(), config.network_id
        )
        proof_path.write_bytes(
            proof.TlogProof(raw.index, raw.hashes, raw.checkpoint, bundle.to_extra()).to_bytes()
        )
        reproduced = verify_verdict_proof(proof_path.read_bytes(), policy)
        artifacts_dir = out / stem
        artifacts_dir.mkdir(exist_ok=True)
        written = []
        for sha256, (path, _) in sorted(reproduced.artifacts.items()):
            target = artifacts_dir / path
            target.write_bytes(client.blob(sha256))
            check_artifact(reproduced, target.read_bytes())
            written.append(str(target))
        _say(f"• proof {proof_path} verified offline; artifacts in {artifacts_dir}")
        result |= {"output_digest": verdict.output_digest, "artifacts": written}
        _finish(args, result, timings)
        return 0


def _failures(client: LogClient, verdict: Verdict) -> dict[str, str]:
    """Say why no output was reproduced: each builder's failure reason (from its reveal),
    who did not reveal, and the groups of outputs. A diff report comes only for two groups."""
    reasons: dict[str, str] = {}
    for failure in verdict.failures:
        reveal = next(iter(logged_entries(client, failure.reveal_leaf, failure.reveal_leaf + 1)))
        entry = reveal.entry
        reason = entry.failure if isinstance(entry, Reveal) and entry.failure else "failed"
        reasons[failure.builder] = reason
        _say(f"• {failure.builder}: build failed: {reason}")
    for builder in verdict.missing:
        reasons[builder] = "no reveal before the deadline"
        _say(f"• {builder}: no reveal before the deadline")
    for group in verdict.groups:
        _say(
            f"• {', '.join(group.builders)}: output {group.output_digest} "
            f"({len(group.builders)} of the {verdict.threshold} needed)"
        )
    if verdict.outcome == "failed" or len(verdict.groups) < 2:
        _say("• no two outputs to compare, so no diff report")
    return reasons


def _wait_for_diff_report(client: LogClient, job: str, after: int) -> str | None:
    deadline = time.monotonic() + 120
    cursor = after + 1
    while time.monotonic() < deadline:
        size = client.size()
        for logged in logged_entries(client, cursor, size):
            if isinstance(logged.entry, DiffReport) and logged.entry.job == job:
                return logged.entry.report_sha256
        cursor = size
        time.sleep(0.5)
    return None


def _finish(args: argparse.Namespace, result: dict[str, object], timings: dict[str, float]) -> None:
    result["timings"] = {k: round(v, 3) for k, v in timings.items()}
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        print(f"{result['crate']}: {result['outcome']}")
        print(f"proof: {result['proof']}  policy: {result['policy']}")
        artifacts = result.get("artifacts")
        if isinstance(artifacts, list) and artifacts:
            print(
                f"check: synchronicity verify --policy {result['policy']} "
                f"--proof {result['proof']} --artifact {artifacts[0]}"
            )
