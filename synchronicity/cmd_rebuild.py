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
from logserver.protocol.entries import Verdict
from logserver.protocol.network import NetworkConfig
from logserver.protocol.verdict_proof import check_artifact
from synchronicity.client import (
    BuilderClient,
    find_request,
    follow,
    logged_entries,
    wait_published,
)
from synchronicity.cmd_build import docs_rs_hint, feature_choice
from synchronicity.cmd_network import REQUESTER_FILE, read_requester
from synchronicity.localnet import chosen_network
from synchronicity.verdicts import (
    can_be_explained,
    failure_reasons,
    find_diff_report,
    write_verdict_proof,
)


def _say(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def rebuild(args: argparse.Namespace) -> int:
    timings: dict[str, float] = {}
    started = time.monotonic()
    with chosen_network(args.network, args.home, "rebuild", _say) as (config, network_dir):
        if args.requester_key is None:
            args.requester_key = network_dir / REQUESTER_FILE
        timings["network_s"] = time.monotonic() - started
        return _run(args, config, timings)


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
        written = write_verdict_proof(
            client, logged, recipe.to_json(), config.network_id, policy, proof_path
        )
        result: dict[str, object] = {
            "crate": recipe.spec,
            "job": job,
            "outcome": verdict.outcome,
            "verdict_index": logged.index,
            "agreeing": list(verdict.agreeing),
            "proof": str(proof_path),
            "policy": str(policy_path),
        }
        reproduced = written.reproduced
        if reproduced is None:
            t = time.monotonic()
            result["failures"] = _failures(client, verdict)
            chosen_by_crate = feature_choice(args) is None and recipe.selection != Features()
            if verdict.outcome == "failed" and chosen_by_crate:
                _say(f"• {docs_rs_hint(recipe.selection)}")
            report = None
            if can_be_explained(verdict):  # else none can come
                report = _wait_for_diff_report(client, job, logged.index)
            if report is not None:
                url = f"{config.log.url}/blob/{report}"
                (out / f"{stem}.diff.txt").write_bytes(client.blob(report))
                _say(f"• diff report: {url} (saved as {out / f'{stem}.diff.txt'})")
                result["diff_report"] = url
            timings["explain_s"] = time.monotonic() - t
            _finish(args, result, timings)
            return 1
        artifacts_dir = out / stem
        artifacts_dir.mkdir(exist_ok=True)
        artifacts = []
        for sha256, (path, _) in sorted(reproduced.artifacts.items()):
            target = artifacts_dir / path
            target.write_bytes(client.blob(sha256))
            check_artifact(reproduced, target.read_bytes())
            artifacts.append(str(target))
        _say(f"• proof {proof_path} verified offline; artifacts in {artifacts_dir}")
        result |= {"output_digest": verdict.output_digest, "artifacts": artifacts}
        _finish(args, result, timings)
        return 0


def _failures(client: LogClient, verdict: Verdict) -> dict[str, str]:
    """Say why no output was reproduced: each builder's failure reason (from its reveal),
    who did not reveal, and the groups of outputs. A diff report comes only for two groups."""
    reasons = failure_reasons(client, verdict)
    for builder, reason in reasons.items():
        if builder in verdict.missing:
            _say(f"• {builder}: {reason}")
        else:
            _say(f"• {builder}: build failed: {reason}")
    for group in verdict.groups:
        _say(
            f"• {', '.join(group.builders)}: output {group.output_digest} "
            f"({len(group.builders)} of the {verdict.threshold} needed)"
        )
    if not can_be_explained(verdict):
        _say("• no two outputs to compare, so no diff report")
    return reasons


def _wait_for_diff_report(client: LogClient, job: str, after: int) -> str | None:
    deadline = time.monotonic() + 120
    cursor = after + 1
    while time.monotonic() < deadline:
        size = client.size()
        report = find_diff_report(list(logged_entries(client, cursor, size)), job)
        if report is not None:
            return report
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
