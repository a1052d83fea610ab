"""The ``synchronicity`` command: argument parsing and the mapping of errors to exit codes.

Exit codes (documented in the README and ``spec/cli.md``):

    0  success
    1  verification failed (a signature, proof, policy or consistency check did not hold)
    2  usage error (bad arguments, malformed input files)
    3  operational error (network, disk, Docker, a server that is down)

Every subcommand lives in its own small module and is imported only when it runs, so that
``synchronicity verify`` needs nothing beyond the base install.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence
from typing import TypeAlias

from logserver.core.errors import (
    FormatError,
    OperationalError,
    SynchronicityError,
    UsageError,
    VerificationError,
)
from synchronicity.lifetime import die_with_parent

EXIT_OK = 0
EXIT_VERIFY = 1
EXIT_USAGE = 2
EXIT_OPERATIONAL = 3

Handler = Callable[[argparse.Namespace], int]
Commands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _lazy(module: str, function: str) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            loaded = importlib.import_module(module)
        except ModuleNotFoundError as e:
            if e.name == "deploy":  # a folder of the repository, not part of the wheel
                raise OperationalError(
                    "this command runs from a repository checkout: pip install -e ."
                ) from e
            # a verify-only install lacks the server extras
            raise OperationalError(
                f"this command needs {e.name!r}: pip install 'synchronicity[all]'"
            ) from e
        handler: Handler = getattr(loaded, function)
        return handler(args)

    return run


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="synchronicity",
        description="Verifiable reproducible builds on a witnessed transparency log.",
    )
    commands = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add_group in (
        _keygen,
        _log,
        _note,
        _verify,
        _build,
        _install,
        _status_and_monitor,
        _network,
        _witness,
        _deploy,
        _demo,
    ):
        add_group(commands)
    return p


def _keygen(commands: Commands) -> None:
    k = commands.add_parser("keygen", help="make an Ed25519 signed-note key pair")
    k.add_argument("name", help="the key name (for a log: its origin)")
    k.add_argument("--out", required=True, help="private key file (the verifier key: FILE.vkey)")
    k.add_argument(
        "--cosignature", action="store_true", help="a witness cosignature key (type 0x04)"
    )
    k.add_argument("--force", action="store_true", help="overwrite an existing key file")
    k.set_defaults(func=_lazy("synchronicity.cmd_keys", "keygen"))


def _log(commands: Commands) -> None:
    log_cmd = commands.add_parser("log", help="run the log server").add_subparsers(
        dest="log_command", required=True, metavar="SUBCOMMAND"
    )
    s = log_cmd.add_parser("serve", help="serve a log over HTTP")
    s.add_argument("--key", required=True, help="the log's private key file")
    s.add_argument("--data", required=True, help="data directory (LMDB)")
    s.add_argument("--listen", default="127.0.0.1:8700", help="HOST:PORT (default %(default)s)")
    s.add_argument("--open", action="store_true", help="accept any entry, signed or not")
    s.add_argument(
        "--accept",
        action="append",
        default=[],
        metavar="VKEY",
        help="accept entries that are signed notes by this key (a vkey or a file; repeatable)",
    )
    s.add_argument(
        "--network", help="network config: publish only checkpoints a witness quorum cosigned"
    )
    s.add_argument("--max-batch", type=int, default=256, help="entries per batch at most")
    s.add_argument("--max-delay-ms", type=float, default=2.0, help="batch gathering time")
    s.add_argument(
        "--max-waiters",
        type=int,
        default=1024,
        help="/latest-checkpoint requests that may wait at once; more are answered at once",
    )
    s.add_argument(
        "--map-size",
        default="64GiB",
        help="LMDB map to start with, in bytes or with K/M/G/T (default %(default)s); it grows",
    )
    s.add_argument(
        "--max-map-size",
        default="4TiB",
        help="the most the map may grow to; then new entries are refused with 507",
    )
    s.add_argument("--log-level", default="info")
    s.set_defaults(func=_lazy("synchronicity.cmd_log", "serve"))


def _note(commands: Commands) -> None:
    n = commands.add_parser("note", help="signed notes").add_subparsers(
        dest="note_command", required=True, metavar="SUBCOMMAND"
    )
    nv = n.add_parser("verify", help="check a signed note's signature by one key")
    nv.add_argument("--vkey", required=True, help="a verifier key, or a file holding one")
    nv.add_argument("file", nargs="?", help="the note (default: standard input)")
    nv.set_defaults(func=_lazy("synchronicity.cmd_keys", "note_verify"))


def _verify(commands: Commands) -> None:
    v = commands.add_parser("verify", help="verify a proof file offline against a trust policy")
    v.add_argument("--policy", required=True, help="tlog-policy file")
    v.add_argument(
        "--proof",
        help="c2sp.org/tlog-proof@v1 file (not needed with --proofs, or for bundles from fetch "
        "--bundle, which carry their proof)",
    )
    v.add_argument("--entry", help="the logged entry (default: the proof's extra data)")
    v.add_argument(
        "--artifact",
        action="append",
        help="a file that must be a reproduced output of the verdict, or a bundle (a tar from "
        "fetch --bundle) whose every artifact must be (repeatable)",
    )
    v.add_argument(
        "--proofs",
        metavar="DIR",
        help="with --lockfile: a directory of proof files (*.tlog-proof), matched to packages by "
        "the crate their recipe names",
    )
    v.add_argument(
        "--lockfile",
        metavar="FILE",
        help="with --proofs: a Cargo.lock; reports, for each crates.io package, whether a proof "
        "says it was reproduced (exit 0 only if every one was)",
    )
    v.add_argument("--json", action="store_true", help="with --lockfile: the report as JSON")
    v.set_defaults(func=_lazy("synchronicity.cmd_verify", "verify"))

    at = commands.add_parser("attest", help="print a verdict proof as an in-toto Statement v1")
    at.add_argument("--proof", required=True, help="a verdict proof file")
    at.add_argument("--policy", required=True, help="tlog-policy file")
    at.set_defaults(func=_lazy("synchronicity.cmd_verify", "attest"))


def _env_sources(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--env-source",
        action="append",
        metavar="SOURCE",
        help="where to get a build environment this host lacks: an export directory or an "
        "http(s) URL of one (repeatable, tried in order)",
    )
    parser.add_argument(
        "--env-timeout",
        type=float,
        default=1200.0,
        metavar="SECONDS",
        help="time allowed to obtain it (default %(default)s)",
    )


def _variation_options(parser: argparse.ArgumentParser) -> None:
    """``build --variation`` / ``--variation-of``: one builder's host conditions (spec/builds.md
    4.1)."""
    var = parser.add_argument_group(
        "host variation (spec/builds.md 4.1): build under one builder's conditions"
    )
    var.add_argument(
        "--variation",
        metavar="SPEC",
        help="cpus=N|all,clock=+Nd,hostname=NAME (any of them; default all CPUs, the true "
        "clock, builder-a)",
    )
    var.add_argument(
        "--variation-of",
        metavar="BUILDER",
        help="the variation a network's builder (name, or 0-based position) gets for the job",
    )
    var.add_argument(
        "--job",
        help="with --variation-of: the job whose assignment to take (default: this "
        "recipe's digest)",
    )
    var.add_argument(
        "--network",
        help="with --variation-of: the network config (default: "
        ".synchronicity/network/network.json)",
    )


def _build(commands: Commands) -> None:
    b = commands.add_parser("build", help="build one crate locally in the sandbox")
    b.add_argument(
        "spec", help="NAME (newest version), NAME@VERSION, a .crate file, or a recipe JSON file"
    )
    b.add_argument("--out", help="output directory (default: ./build/NAME-VERSION)")
    _crate_choice(b)
    _env_sources(b)
    _variation_options(b)
    b.set_defaults(func=_lazy("synchronicity.cmd_build", "build"))

    img = commands.add_parser("image", help="the build image").add_subparsers(
        dest="image_command", required=True, metavar="SUBCOMMAND"
    )
    ib = img.add_parser(
        "bootstrap", help="debootstrap and import the build and diff images if needed"
    )
    ib.add_argument(
        "--update-lock",
        action="store_true",
        help="install the newest Debian packages and rewrite builder/images/*.lock",
    )
    ib.set_defaults(func=_lazy("synchronicity.cmd_build", "bootstrap"))
    ie = img.add_parser(
        "export",
        help="write the build environment's archives to a directory, or upload them to a log",
        description="Write this host's build environment (root file system and toolchain "
        "archives, named by digest, the same bytes every time) into DIR, and/or upload them "
        "in chunks to the blob store of a network's log with a builder's key.",
    )
    ie.add_argument("--out", metavar="DIR", help="directory to write the archives into")
    ie.add_argument("--recipe", help="export the environment this recipe pins (default: ours)")
    ie.add_argument("--to-log", action="store_true", help="upload to the network log's blobs")
    ie.add_argument("--network", help="network config (with --to-log)")
    ie.add_argument("--key", help="a builder's private key (with --to-log)")
    _env_sources(ie)
    ie.set_defaults(func=_lazy("synchronicity.cmd_image", "export"))

    rb = commands.add_parser(
        "rebuild", help="rebuild a crate on a network of builders and prove the verdict"
    )
    rb.add_argument("spec", help="NAME (newest version), NAME@VERSION or a local .crate file")
    _crate_choice(rb)
    rb.add_argument("--network", help="a running network's config (default: a local one)")
    rb.add_argument("--home", default=".synchronicity", help="local network data directory")
    rb.add_argument("--out", default=".", help="where to write the proof, policy and artifacts")
    rb.add_argument("--json", action="store_true", help="machine-readable result on stdout")
    rb.add_argument("--timeout", type=float, default=1800, help="seconds to wait for a verdict")
    rb.add_argument(
        "--requester-key",
        help="a requester's private key, to sign the upload of a local .crate (default: "
        "requester.key next to the network config)",
    )
    rb.set_defaults(func=_lazy("synchronicity.cmd_rebuild", "rebuild"))

    ca = commands.add_parser(
        "campaign",
        help="rebuild every crate of a list on a network; a proof and a summary",
        description="Rebuild every NAME or NAME@VERSION line of FILE (blank lines and # "
        "comments ignored) on a network, and write into DIR a proof per verdict "
        "(NAME-VERSION.tlog-proof), a diff report per explained mismatch, the policy "
        "(network.policy) and summary.json and summary.md. Resumable: a rerun skips what is "
        "done and follows what was requested. Exit 0 when every line has an outcome.",
    )
    ca.add_argument("file", help="the list of crates: NAME or NAME@VERSION, one a line")
    ca.add_argument("--out", required=True, help="where to write proofs, reports, the summary")
    ca.add_argument("--network", help="a running network's config (default: a local one)")
    ca.add_argument("--home", default=".synchronicity", help="local network data directory")
    ca.add_argument("--json", action="store_true", help="the summary as the last line of stdout")
    ca.add_argument(
        "--in-flight",
        type=int,
        help="jobs requested at a time (default: twice the builds a builder runs at once)",
    )
    ca.add_argument(
        "--timeout",
        type=float,
        default=3600,
        help="give up (exit 3) after this many seconds without progress (default %(default)s)",
    )
    ca.set_defaults(func=_lazy("synchronicity.cmd_campaign", "campaign"))


def _install(commands: Commands) -> None:
    i = commands.add_parser(
        "install",
        help="install a crate's reproduced binaries, verified, without building",
        description="Find the crate's newest reproduced verdict in a network's log, verify its "
        "proof offline, download the binaries by SHA-256 and install them into ROOT/bin, with "
        "the proof in ROOT/.synchronicity/. Refuses (exit 1) anything not reproduced.",
    )
    i.add_argument("spec", help="NAME (the newest reproduced release) or NAME@VERSION")
    i.add_argument(
        "--root", help="install root (default: $CARGO_INSTALL_ROOT, $CARGO_HOME or ~/.cargo)"
    )
    _artifact_source(i)
    i.set_defaults(func=_lazy("synchronicity.cmd_install", "install"))

    f = commands.add_parser(
        "fetch",
        help="download a crate's reproduced artifacts and their proof, verified",
        description="Like install, for every reproduced artifact (bin, rlib, cdylib, "
        "staticlib): written into DIR with NAME-VERSION.tlog-proof, or as one tar with --bundle.",
    )
    f.add_argument("spec", help="NAME@VERSION (or NAME: the newest reproduced release)")
    f.add_argument("--out", required=True, help="directory to write into")
    f.add_argument(
        "--bundle", action="store_true", help="write one tar, NAME-VERSION.tar, with the proof"
    )
    _artifact_source(f)
    f.set_defaults(func=_lazy("synchronicity.cmd_install", "fetch"))


def _artifact_source(parser: argparse.ArgumentParser) -> None:
    """Where install and fetch find a verdict, whom they trust, where they get the bytes."""
    parser.add_argument(
        "--network",
        help="the network's config (default: .synchronicity/network/network.json if it exists)",
    )
    parser.add_argument("--policy", help="a tlog-policy file, instead of --network")
    parser.add_argument("--log", help="the log's URL (default: the policy's)")
    parser.add_argument(
        "--mirror",
        action="append",
        metavar="URL",
        help="a blob source serving URL/<sha256>, asked before the log (repeatable)",
    )
    parser.add_argument(
        "--local", action="store_true", help="also take a verdict of a local .crate upload"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds per HTTP request")


def _crate_choice(parser: argparse.ArgumentParser) -> None:
    """Version and features of the crate to build (default: what docs.rs builds, else the
    crate's default features)."""
    parser.add_argument("--features", help="features to enable, comma or space separated")
    parser.add_argument("--all-features", action="store_true", help="enable every feature")
    parser.add_argument(
        "--no-default-features", action="store_true", help="do not enable the default features"
    )
    parser.add_argument(
        "--pre", action="store_true", help="with NAME alone, a pre-release may be the newest"
    )


def _status_and_monitor(commands: Commands) -> None:
    st = commands.add_parser("status", help="summarise a network's health")
    st.add_argument("--network", default=".synchronicity/network/network.json")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=_lazy("synchronicity.cmd_status", "status"))

    m = commands.add_parser("monitor", help="follow a log and check it never forks")
    m.add_argument("--policy", required=True, help="tlog-policy file")
    m.add_argument("--state", required=True, help="directory for the last verified checkpoint")
    m.add_argument("--log", help="log URL (default: the policy's log URL)")
    m.add_argument("--once", action="store_true", help="check once and exit")
    m.add_argument("--interval", type=float, default=5.0, help="seconds between checks")
    m.add_argument(
        "--network", help="network config: also replay the build protocol, recompute verdicts"
    )
    m.set_defaults(func=_lazy("synchronicity.cmd_monitor", "monitor"))


def _network(commands: Commands) -> None:
    net = commands.add_parser("network", help="network configuration").add_subparsers(
        dest="network_command", required=True, metavar="SUBCOMMAND"
    )
    ni = net.add_parser("init", help="write a local network config with fresh keys")
    ni.add_argument("--dir", required=True, help="where to write network.json, keys, policy")
    ni.add_argument("--witnesses", type=int, default=4, help="n = 3f+1 (default %(default)s)")
    ni.add_argument("--host", default="127.0.0.1", help="address the nodes listen on")
    ni.add_argument("--log-port", type=int, default=8700, help="the log's port; witnesses follow")
    ni.add_argument("--origin", default="synchronicity.local/log", help="the log's origin")
    ni.add_argument("--hosts", help="host names, comma-separated: the log's, then each witness's")
    ni.add_argument("--force", action="store_true", help="replace an existing config")
    ni.set_defaults(func=_lazy("synchronicity.cmd_network", "init"))
    nr = net.add_parser(
        "rotate-key",
        help="give a witness a new key; its old one signs nothing from now on",
        description="Replace a witness's key in DIR: the new key goes to witness-I.key, the "
        "old one to the config's previous_keys, valid for leaves stamped before now. Restart "
        "the network with the new config (every node); the log's history still verifies, and "
        "consensus starts a new epoch (spec/network.md).",
    )
    nr.add_argument("--dir", required=True, help="the network directory (network.json, keys)")
    nr.add_argument("--witness", required=True, type=int, help="the witness's number, 1..n")
    nr.set_defaults(func=_lazy("synchronicity.cmd_network", "rotate_key"))
    nu = net.add_parser(
        "up",
        help="run the local network in the foreground; rebuild and campaign use it",
        description="Start (creating it on first use) the local network of --home and keep it "
        "running; print the dashboard URL and the network config path. rebuild and campaign "
        "of this home use it instead of starting their own. Ctrl-C or SIGTERM stops it (exit "
        "0).",
    )
    nu.add_argument("--home", default=".synchronicity", help="local network data directory")
    nu.add_argument(
        "--max-builds", type=int, default=1, help="builds each builder runs at once (default 1)"
    )
    nu.set_defaults(func=_lazy("synchronicity.cmd_up", "up"))


def _witness(commands: Commands) -> None:
    wit = commands.add_parser("witness", help="the builder-witness node").add_subparsers(
        dest="witness_command", required=True, metavar="SUBCOMMAND"
    )
    wr = wit.add_parser("run", help="run one witness of a network")
    wr.add_argument("--config", required=True, help="network config (network.json)")
    wr.add_argument("--key", required=True, help="this witness's private key file")
    wr.add_argument("--data", required=True, help="data directory (LMDB)")
    wr.add_argument("--listen", help="HOST:PORT (default: from the witness's URL)")
    limits = wr.add_argument_group("build requests (POST /request, PUT /crate; spec/api.md)")
    limits.add_argument(
        "--request-rate", type=float, default=30.0, help="per client address a minute (0: any)"
    )
    limits.add_argument("--request-burst", type=int, default=10, help="requests at once")
    limits.add_argument(
        "--max-pending-jobs", type=int, default=64, help="jobs waiting for a verdict, at most"
    )
    limits.add_argument("--max-crate-mib", type=int, default=64, help="largest .crate upload")
    wr.add_argument(
        "--max-builds",
        type=int,
        default=1,
        help="builds (and diffs) this builder runs at once (default %(default)s)",
    )
    wr.add_argument("--log-level", default="info")
    wr.add_argument(
        "--misbehave",
        choices=["fabricate", "contradict"],
        help="fault injection for tests: reveal a digest never built, or contradict the commit",
    )
    wr.add_argument(
        "--keep-rounds",
        type=int,
        default=1000,
        help="consensus blocks kept below the last commit; a peer away longer catches up by "
        "state sync (default %(default)s)",
    )
    _env_sources(wr)  # tried before the network's environment_sources and the log's blobs
    wr.set_defaults(func=_lazy("synchronicity.cmd_witness", "run"))
    _witness_add_checkpoint(wit)
    _witness_simulate(wit)


def _witness_add_checkpoint(witness: Commands) -> None:
    ac = witness.add_parser(
        "add-checkpoint",
        help="a standalone c2sp.org/tlog-witness witness of other logs (POST /add-checkpoint)",
        description=(
            "Serve only POST /add-checkpoint for the given logs. Binds HOST:PORT itself (port "
            '0: any), then prints one JSON line {"listen": ..., "vkeys": [...]} on stderr. '
            "SIGTERM stops it cleanly (exit 0)."
        ),
    )
    ac.add_argument("--data", required=True, help="directory of the LMDB witness state")
    ac.add_argument(
        "--key",
        action="append",
        required=True,
        help="file holding a PRIVATE+KEY cosignature/v1 (type 0x04) key; repeatable",
    )
    ac.add_argument(
        "--log",
        action="append",
        nargs=2,
        metavar=("ORIGIN", "VKEY"),
        default=[],
        help="a log to witness and one of its Ed25519 note keys; repeatable",
    )
    ac.add_argument("--listen", default="127.0.0.1:0", help="HOST:PORT (port 0: any)")
    ac.add_argument("--max-body", type=int, help="largest request body in bytes (default: 256 KiB)")
    ac.set_defaults(func=_lazy("synchronicity.cmd_witness", "add_checkpoint"))


# The simulator's fault kinds (witness.sim.scenarios.BYZANTINE_KINDS; a test keeps them equal),
# spelled out so that parsing the command line imports nothing of the witness.
BYZANTINE_KINDS = (
    "equivocate",
    "double-vote",
    "withhold",
    "stale-qc",
    "ghost-qc",
    "inflated-round",
    "forged",
    "fork",
)


def _witness_simulate(witness: Commands) -> None:
    sim = witness.add_parser(
        "simulate",
        help="drive the consensus core through a deterministic faulty network",
        description="Run seeded Twins-style scenarios of the HotStuff (DiemBFT v4) core.",
    )
    sim.add_argument("--n", type=int, default=4, help="replicas, 3f+1 (default 4)")
    sim.add_argument("--twins", type=int, default=1, help="keys run by two instances")
    sim.add_argument("--scenarios", type=int, default=1000)
    sim.add_argument("--seed", type=int, default=0)
    sim.add_argument("--rounds", type=int, default=8, help="rounds with scheduled faults")
    sim.add_argument("--partitions", type=int, default=2, help="groups per round (at most)")
    sim.add_argument("--crash", action="store_true", help="crash and restart replicas")
    sim.add_argument(
        "--crash-all", action="store_true", help="also crash every honest replica at once"
    )
    sim.add_argument(
        "--absence",
        action="store_true",
        help="one replica is down long enough for its peers to prune what it lacks",
    )
    sim.add_argument(
        "--idle-rate", type=float, default=0.0, help="chance a leader's log has nothing new"
    )
    sim.add_argument(
        "--restart-without-state",
        action="store_true",
        help="negative control: restarted replicas forget their persisted safety state",
    )
    sim.add_argument("--byzantine", choices=BYZANTINE_KINDS, default=None)
    sim.add_argument("--drop-rate", type=float, default=0.02)
    sim.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    sim.set_defaults(func=_lazy("synchronicity.cmd_witness", "simulate"))


def _deploy(commands: Commands) -> None:
    dep = commands.add_parser(
        "deploy", help="container deployment (from a repository checkout; deploy/README.md)"
    ).add_subparsers(dest="deploy_command", required=True, metavar="SUBCOMMAND")
    di = dep.add_parser(
        "image",
        help="build the node image (no registry); prints its tag",
        description="Build the node image (no registry) and print its tag. Needs root, "
        "debootstrap and a Docker engine.",
    )
    di.add_argument("--project", help="the project to install (default: this checkout)")
    di.set_defaults(func=_lazy("synchronicity.cmd_deploy", "image"))

    dc = dep.add_parser(
        "config",
        help="network config for the node containers",
        description="Write network.json, keys and policy for containers named log, witness-1, "
        "...; as root, give them to the containers' user (uid 10001).",
    )
    dc.add_argument("--dir", required=True, help="where to write network.json, keys, policy")
    dc.add_argument("--witnesses", type=int, default=4, help="n = 3f+1 (default %(default)s)")
    dc.add_argument("--round-ms", type=int, default=1000, help="first consensus timeout")
    dc.add_argument("--max-round-ms", type=int, default=30_000, help="longest timeout")
    dc.add_argument(
        "--entries",
        choices=["protocol", "open"],
        default="protocol",
        help="protocol: build-protocol entries only; open: any entry (demos, tests)",
    )
    dc.add_argument("--force", action="store_true", help="replace an existing config")
    dc.set_defaults(func=_lazy("synchronicity.cmd_deploy", "config"))

    dp = dep.add_parser(
        "proxy",
        help="the Docker API proxy of builder nodes in containers (runs in the node image)",
        description="Forward to the Docker engine only the calls a node's build sandboxes "
        "make, on the containers and volumes it created; refuse everything else (403). Each "
        "node gets its own unix socket. Serves until SIGTERM. See deploy/README.md.",
    )
    dp.add_argument("--docker", default="unix:///var/run/docker.sock", help="the engine's socket")
    dp.add_argument(
        "--client",
        action="append",
        metavar="NAME=PATH",
        help="a node's name and the unix socket to serve it on (repeatable)",
    )
    dp.add_argument(
        "--image-prefix",
        help="the nodes' image prefix (default: $SYNCHRONICITY_IMAGE_PREFIX or synchronicity)",
    )
    dp.add_argument("--log", metavar="FILE", help="also append the JSON log lines to FILE")
    dp.set_defaults(func=_lazy("synchronicity.dockerproxy", "main"))


def _demo(commands: Commands) -> None:
    d = commands.add_parser("demo", help="run a log locally, append, prove and verify")
    d.add_argument("--dir", help="working directory (default: a new temporary one)")
    d.add_argument("--entries", type=int, default=100, help="entries to append")
    d.set_defaults(func=_lazy("synchronicity.cmd_demo", "demo"))


def main(argv: Sequence[str] | None = None) -> int:
    die_with_parent()  # when started by synchronicity.launcher
    args = _parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except VerificationError as e:
        _say(f"verification failed: {e}")
        return EXIT_VERIFY
    except (FormatError, UsageError) as e:
        _say(str(e))
        return EXIT_USAGE
    except OperationalError as e:
        _say(str(e))
        return EXIT_OPERATIONAL
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as e:
        _say(f"{e.strerror}: {e.filename}")  # a path argument that names nothing usable
        return EXIT_USAGE
    except OSError as e:
        _say(f"{e.strerror or e}: {e.filename}" if e.filename else str(e))
        return EXIT_OPERATIONAL
    except SynchronicityError as e:  # a new kind nobody mapped yet: say so, do not hide it
        _say(f"error: {e}")
        return EXIT_OPERATIONAL
    except KeyboardInterrupt:
        return 130
    return code


def _say(message: str) -> None:
    print(f"synchronicity: {message}", file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
