"""The Docker API allow-list of a builder node (pure, no I/O): what a node may ask the engine.

A node that holds the Docker socket is root on its host, so a builder-witness in a container
never gets the socket: it talks to the proxy (:mod:`synchronicity.dockerproxy.server`), which
forwards only the calls that the build sandbox makes (builder/container.py, builder/volumes.py,
builder/environment.py, builder/image.py) and answers everything else 403. Each node has a
socket of its own, so the proxy knows which node asks (its *client name*).

**Ownership.** Containers and volumes a node creates get the label ``synchronicity.node=<client
name>`` from the proxy (whatever the request said), beside the ``synchronicity.build`` label the
request must carry. A call that names a container or volume is forwarded only if that label
says the asking node (the server looks it up first, and forwards the request to the full id it
found, so a name cannot change meaning in between); a listing must filter on
``synchronicity.build`` and gets the node's own label added as a filter. So a node can neither
see nor touch the other nodes, their builds, their data volumes or the proxy itself.

**Containers** are created only without anything that reaches the host: no bind mounts (a
mount is a volume the node owns, or a tmpfs), no network but ``none`` (or networking disabled),
no privileges, added capabilities, devices, host namespaces (pid, ipc, uts, user, cgroup), no
unconfined security options, no other runtime, log driver, restart policy, DNS, ports, sysctls,
links or init binary; any field this module does not know is refused. A container is
*started* only if it is a sandbox: a numeric non-root user, every capability dropped,
``no-new-privileges``, a read-only root file system, network ``none``, memory and process
limits (:func:`check_start`). Containers that are only filled (``put_archive``) and committed
need not be.

**Images** are never pulled, pushed, built or loaded: ``POST /images/create`` only imports the
request body (``fromSrc=-``) into the build image repository; a commit only makes the staging
image of the environment; a tag only names an environment image; only staging images are
deleted. Images may be listed and inspected. The repositories are those of the node's image
prefix (``synchronicity`` by default: ``-build``, ``-env``, ``-env-staging``).

:func:`route` classifies a request line, :func:`check_container_create` and
:func:`check_volume_create` check (and label) a body, :func:`check_start` a container about to
start. Each raises :class:`Forbidden` with the reason, which the proxy sends in the 403 answer.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode

LABEL_BUILD = "synchronicity.build"  # builder.container.LABEL_BUILD
LABEL_NODE = "synchronicity.node"  # set by the proxy: the node that created it
BODY_NONE = "none"  # no body, or a small one forwarded as it is
BODY_JSON = "json"  # a JSON body the policy checks and rewrites
BODY_STREAM = "stream"  # a tar stream forwarded as it comes (archive, import)
MAX_JSON_BODY = 1 << 20
MAX_SMALL_BODY = 64 << 10

_VERSION = re.compile(r"/v[0-9]+\.[0-9]+(?=/)")
_ID = r"([A-Za-z0-9][A-Za-z0-9_.-]{0,127})"
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_CLIENT = re.compile(r"[a-z0-9]([a-z0-9.-]{0,62}[a-z0-9])?")


class Forbidden(Exception):
    """The call is not on the allow-list; ``str()`` says why."""


@dataclass(frozen=True)
class Route:
    """An allowed call: the rule that allows it, what the client must own, how the body is
    handled, and the query string to forward (rewritten by some rules)."""

    rule: str
    path: str  # the path to forward (with its version prefix)
    query: str
    body: str = BODY_NONE
    container: str | None = None  # a container the client must own (path or query)
    volume: str | None = None  # a volume the client must own
    upgrade: bool = False  # the connection is hijacked (attach)


@dataclass(frozen=True)
class Repositories:
    """The image repositories a node may write, from its image prefix."""

    prefix: str = "synchronicity"

    @property
    def build(self) -> str:
        return f"{self.prefix}-build"

    @property
    def environment(self) -> str:
        return f"{self.prefix}-env"

    @property
    def staging(self) -> str:
        return f"{self.prefix}-env-staging"


def check_client_name(name: str) -> str:
    if _CLIENT.fullmatch(name) is None:
        raise ValueError(f"client name {name!r}: lowercase letters, digits, '.' and '-'")
    return name


def _one(query: Mapping[str, list[str]], key: str) -> str | None:
    values = query.get(key)
    if values is None:
        return None
    if len(values) != 1:
        raise Forbidden(f"query parameter {key} given {len(values)} times")
    return values[0]


def _only(query: Mapping[str, list[str]], allowed: set[str], what: str) -> None:
    unknown = sorted(set(query) - allowed)
    if unknown:
        raise Forbidden(f"{what}: query parameters not allowed: {', '.join(unknown)}")


def _false(query: Mapping[str, list[str]], key: str, what: str) -> None:
    if _one(query, key) not in (None, "", "0", "false", "False"):
        raise Forbidden(f"{what}: {key} is not allowed")


def _filters_with_node(query: Mapping[str, list[str]], client: str, what: str) -> str:
    """The query with ``synchronicity.node=<client>`` added to its label filters, which must
    already select ``synchronicity.build``."""
    raw = _one(query, "filters")
    try:
        filters = json.loads(raw) if raw else {}
    except ValueError as exc:
        raise Forbidden(f"{what}: filters are not JSON") from exc
    if not isinstance(filters, dict):
        raise Forbidden(f"{what}: filters are not an object")
    labels = filters.get("label", [])
    if isinstance(labels, dict):  # the older form {"label": {"a=b": true}}
        labels = [key for key, on in labels.items() if on]
    if isinstance(labels, str):
        labels = [labels]
    if not isinstance(labels, list) or not all(isinstance(x, str) for x in labels):
        raise Forbidden(f"{what}: label filters are not a list of strings")
    if not any(x == LABEL_BUILD or x.startswith(LABEL_BUILD + "=") for x in labels):
        raise Forbidden(f"{what}: only a listing filtered on the label {LABEL_BUILD}")
    filters["label"] = [*labels, f"{LABEL_NODE}={client}"]
    rest = {k: v for k, v in query.items() if k != "filters"}
    return urlencode({**rest, "filters": [json.dumps(filters)]}, doseq=True)


def _repository_of(name: str) -> tuple[str, str] | None:
    repository, colon, tag = name.rpartition(":")
    if not colon or "/" in tag or _TAG.fullmatch(tag) is None:
        return None
    return repository, tag


Handler = Callable[[re.Match[str], str, dict[str, list[str]], str, Repositories], Route]


def _ping(match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any) -> Route:
    return Route("engine", path, urlencode(query, doseq=True))


def _image_read(match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any) -> Route:
    return Route("image-read", path, urlencode(query, doseq=True))


def _image_import(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, repos: Repositories
) -> Route:
    what = "image create"
    if "fromImage" in query:
        raise Forbidden(f"{what}: images are never pulled")
    if _one(query, "fromSrc") != "-":
        raise Forbidden(f"{what}: only an import of the request body (fromSrc=-)")
    _only(query, {"fromSrc", "repo", "tag", "changes", "message"}, what)
    if _one(query, "repo") != repos.build or _TAG.fullmatch(_one(query, "tag") or "") is None:
        raise Forbidden(f"{what}: only into {repos.build}:<tag>")
    return Route("image-import", path, urlencode(query, doseq=True), BODY_STREAM)


def _image_tag(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, repos: Repositories
) -> Route:
    _only(query, {"repo", "tag", "force"}, "image tag")
    _false(query, "force", "image tag")
    if _one(query, "repo") != repos.environment or not _TAG.fullmatch(_one(query, "tag") or ""):
        raise Forbidden(f"image tag: only as {repos.environment}:<tag>")
    return Route("image-tag", path, urlencode(query, doseq=True))


def _image_delete(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, repos: Repositories
) -> Route:
    _only(query, {"force", "noprune"}, "image delete")
    _false(query, "force", "image delete")
    named = _repository_of(match.group(1))
    if named is None or named[0] != repos.staging:
        raise Forbidden(f"image delete: only {repos.staging}:<tag> images")
    return Route("image-delete", path, urlencode(query, doseq=True))


def _commit(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, repos: Repositories
) -> Route:
    what = "commit"
    _only(query, {"container", "repo", "tag", "changes", "comment", "author", "pause"}, what)
    container = _one(query, "container")
    if not container:
        raise Forbidden(f"{what}: no container")
    if _one(query, "repo") != repos.staging or not _TAG.fullmatch(_one(query, "tag") or ""):
        raise Forbidden(f"{what}: only into {repos.staging}:<tag>")
    return Route("commit", path, urlencode(query, doseq=True), container=container)


def _container_create(
    match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any
) -> Route:
    _only(query, set(), "container create")  # no name: names are the operator's
    return Route("container-create", path, "", BODY_JSON)


def _container_list(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, _: Repositories
) -> Route:
    known = {"all", "filters", "limit", "size", "since", "before", "trunc_cmd"}
    _only(query, known, "container list")
    return Route("container-list", path, _filters_with_node(query, client, "container list"))


def _container(rule: str, allowed: set[str], body: str = BODY_NONE) -> Handler:
    def handler(match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any) -> Route:
        _only(query, allowed, rule)
        if rule == "container-attach":
            _false(query, "stdin", rule)
        if rule == "container-delete":
            _false(query, "link", rule)
        return Route(
            rule,
            path,
            urlencode(query, doseq=True),
            body,
            container=match.group(1),
            upgrade=rule == "container-attach",
        )

    return handler


def _volume_create(match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any) -> Route:
    _only(query, set(), "volume create")
    return Route("volume-create", path, "", BODY_JSON)


def _volume_list(
    match: re.Match[str], path: str, query: dict[str, list[str]], client: str, _: Repositories
) -> Route:
    _only(query, {"filters"}, "volume list")
    return Route("volume-list", path, _filters_with_node(query, client, "volume list"))


def _volume(rule: str, allowed: set[str]) -> Handler:
    def handler(match: re.Match[str], path: str, query: dict[str, list[str]], *_: Any) -> Route:
        _only(query, allowed, rule)
        return Route(rule, path, urlencode(query, doseq=True), volume=match.group(1))

    return handler


# (method, path pattern without the version prefix, handler): the whole allow-list of calls.
ALLOWED: tuple[tuple[str, re.Pattern[str], Handler], ...] = tuple(
    (method, re.compile(pattern), handler)
    for method, pattern, handler in [
        ("GET", r"/_ping", _ping),
        ("HEAD", r"/_ping", _ping),
        ("GET", r"/version", _ping),
        ("GET", r"/info", _ping),
        ("GET", r"/images/json", _image_read),
        ("GET", r"/images/([^?#]+)/json", _image_read),
        ("POST", r"/images/create", _image_import),
        ("POST", r"/images/([^?#]+)/tag", _image_tag),
        ("DELETE", r"/images/([^?#/]+)", _image_delete),
        ("POST", r"/commit", _commit),
        ("POST", r"/containers/create", _container_create),
        ("GET", r"/containers/json", _container_list),
        ("GET", rf"/containers/{_ID}/json", _container("container-inspect", {"size"})),
        ("POST", rf"/containers/{_ID}/start", _container("container-start", set())),
        (
            "POST",
            rf"/containers/{_ID}/attach",
            _container("container-attach", {"stdout", "stderr", "stream", "logs", "stdin"}),
        ),
        ("POST", rf"/containers/{_ID}/wait", _container("container-wait", {"condition"})),
        ("POST", rf"/containers/{_ID}/kill", _container("container-kill", {"signal"})),
        (
            "GET",
            rf"/containers/{_ID}/logs",
            _container(
                "container-logs",
                {"stdout", "stderr", "follow", "timestamps", "tail", "since", "until"},
            ),
        ),
        ("DELETE", rf"/containers/{_ID}", _container("container-delete", {"force", "v", "link"})),
        (
            "PUT",
            rf"/containers/{_ID}/archive",
            _container("archive-put", {"path", "noOverwriteDirNonDir", "copyUIDGID"}, BODY_STREAM),
        ),
        ("POST", r"/volumes/create", _volume_create),
        ("GET", r"/volumes", _volume_list),
        ("GET", rf"/volumes/{_ID}", _volume("volume-inspect", set())),
        ("DELETE", rf"/volumes/{_ID}", _volume("volume-delete", {"force"})),
    ]
)


def route(method: str, target: str, client: str, repos: Repositories) -> Route:
    """The allow-list rule for ``method target`` asked by ``client``; Forbidden if there is none."""
    raw_path, _, raw_query = target.partition("?")
    if "#" in target or not raw_path.startswith("/") or "%" in raw_path or ".." in raw_path:
        raise Forbidden(f"{method} {raw_path[:200]}: not a path this proxy forwards")
    version = _VERSION.match(raw_path)
    path = raw_path[version.end() :] if version else raw_path
    try:
        query = parse_qs(raw_query, keep_blank_values=True, strict_parsing=False)
    except ValueError as exc:
        raise Forbidden(f"{method} {path}: the query does not parse") from exc
    for allowed_method, pattern, handler in ALLOWED:
        match = pattern.fullmatch(path)
        if match is not None and method == allowed_method:
            forwarded = handler(match, raw_path, query, client, repos)
            return forwarded
    raise Forbidden(f"{method} {path} is not on the builder's allow-list")


# ----- bodies -----------------------------------------------------------------------------


def _empty(value: object) -> bool:
    return value in (None, False, 0, "", [], {})


Check = Callable[[object], bool]
_ANY: Check = lambda value: True  # noqa: E731
_EMPTY: Check = _empty


def _among(*allowed: object) -> Check:
    return lambda value: _empty(value) or value in allowed


def _security(value: object) -> bool:
    allowed = {"no-new-privileges", "no-new-privileges:true", "no-new-privileges=true"}
    return _empty(value) or (isinstance(value, list) and all(v in allowed for v in value))


def _log_config(value: object) -> bool:
    if _empty(value):
        return True
    if not isinstance(value, dict) or set(value) - {"Type", "Config"}:
        return False
    return value.get("Type") in (None, "", "json-file", "local") and _empty(value.get("Config"))


def _restart(value: object) -> bool:
    return _empty(value) or (
        isinstance(value, dict) and value.get("Name") in (None, "", "no") and
        set(value) <= {"Name", "MaximumRetryCount"}
    )  # fmt: skip


def _tmpfs(value: object) -> bool:
    return _empty(value) or (
        isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str)
                                        for k, v in value.items())
    )  # fmt: skip


def _strings(value: object) -> bool:
    return value is None or (isinstance(value, list) and all(isinstance(v, str) for v in value))


# HostConfig fields: each with what it may be. Unknown fields are refused.
HOST_CONFIG: dict[str, Check] = {
    **dict.fromkeys(
        [
            "Memory",
            "MemorySwap",
            "MemoryReservation",
            "KernelMemory",
            "MemorySwappiness",
            "NanoCpus",
            "CpuQuota",
            "CpuPeriod",
            "CpuShares",
            "CpusetCpus",
            "CpusetMems",
            "CpuCount",
            "CpuPercent",
            "PidsLimit",
            "ShmSize",
            "BlkioWeight",
            "Ulimits",
            "Init",
            "ReadonlyRootfs",
            "AutoRemove",
            "CapDrop",
            "ConsoleSize",
        ],
        _ANY,
    ),
    **dict.fromkeys(
        [
            "Binds",
            "PortBindings",
            "PublishAllPorts",
            "Links",
            "LxcConf",
            "Privileged",
            "Dns",
            "DnsSearch",
            "DnsOptions",
            "VolumesFrom",
            "CapAdd",
            "Capabilities",
            "Devices",
            "DeviceCgroupRules",
            "DeviceRequests",
            "GroupAdd",
            "ExtraHosts",
            "Sysctls",
            "StorageOpt",
            "InitPath",
            "CgroupParent",
            "Cgroup",
            "VolumeDriver",
            "OomKillDisable",
            "OomScoreAdj",
            "CPURealtimePeriod",
            "CPURealtimeRuntime",
            "ContainerIDFile",
            "PidMode",
            "UTSMode",
            "UsernsMode",
        ],
        _EMPTY,
    ),
    "NetworkMode": _among("none", "default"),  # "default" only with networking disabled
    "IpcMode": _among("private", "none"),
    "CgroupnsMode": _among("private"),
    "Isolation": _among("default"),
    "Runtime": _among("runc"),
    "SecurityOpt": _security,
    "LogConfig": _log_config,
    "RestartPolicy": _restart,
    "Tmpfs": _tmpfs,
    "Mounts": _ANY,  # checked by _mounts
}
# Container config fields. Unknown fields are refused.
CONFIG: dict[str, Check] = {
    **dict.fromkeys(
        [
            "Hostname",
            "Domainname",
            "User",
            "Tty",
            "AttachStdout",
            "AttachStderr",
            "Cmd",
            "Entrypoint",
            "Env",
            "WorkingDir",
            "Image",
            "NetworkDisabled",
            "StopSignal",
            "StopTimeout",
            "Labels",
            "HostConfig",
            "NetworkingConfig",
            "Healthcheck",
            "OnBuild",
            "Shell",
            "ArgsEscaped",
        ],
        _ANY,
    ),
    **dict.fromkeys(
        ["AttachStdin", "OpenStdin", "StdinOnce", "Volumes", "ExposedPorts", "MacAddress"],
        _EMPTY,
    ),
}


def _check_fields(doc: Mapping[str, object], allowed: Mapping[str, Check], what: str) -> None:
    for key, value in doc.items():
        check = allowed.get(key)
        if check is None:
            raise Forbidden(f"{what}: the field {key} is not allowed")
        if not check(value):
            raise Forbidden(f"{what}: {key}={json.dumps(value)[:200]} is not allowed")


def _mounts(value: object, what: str) -> list[str]:
    """The volumes the mounts name (the client must own each); Forbidden for anything else."""
    if _empty(value):
        return []
    if not isinstance(value, list):
        raise Forbidden(f"{what}: Mounts is not a list")
    volumes = []
    for mount in value:
        if not isinstance(mount, dict):
            raise Forbidden(f"{what}: a mount is not an object")
        kind = mount.get("Type")
        if kind == "tmpfs":
            if not _empty(mount.get("Source")) or set(mount) - {
                "Type", "Target", "ReadOnly", "TmpfsOptions", "Consistency",
            }:  # fmt: skip
                raise Forbidden(f"{what}: a tmpfs mount with a source or volume options")
            continue
        if kind != "volume":
            raise Forbidden(f"{what}: a {kind} mount (only volumes and tmpfs)")
        options = mount.get("VolumeOptions") or {}
        if not isinstance(options, dict) or set(options) - {"NoCopy", "Labels"}:
            raise Forbidden(f"{what}: volume options other than NoCopy (a driver configuration)")
        source = mount.get("Source")
        if not isinstance(source, str) or re.fullmatch(_ID, source) is None:
            raise Forbidden(f"{what}: a volume mount needs the name of an existing volume")
        if set(mount) - {"Type", "Source", "Target", "ReadOnly", "VolumeOptions", "Consistency"}:
            raise Forbidden(f"{what}: mount fields other than type, source, target, read-only")
        volumes.append(source)
    return volumes


def _labels(doc: dict[str, Any], client: str, what: str) -> dict[str, str]:
    labels = doc.get("Labels") or {}
    if not isinstance(labels, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in labels.items()
    ):
        raise Forbidden(f"{what}: labels are not strings")
    if not labels.get(LABEL_BUILD):
        raise Forbidden(f"{what}: without the label {LABEL_BUILD}")
    return {**labels, LABEL_NODE: client}


def check_container_create(body: object, client: str) -> tuple[dict[str, Any], list[str]]:
    """The create body to forward (labelled with the client) and the volumes it mounts, which
    the client must own; Forbidden for anything not on the allow-list."""
    what = "container create"
    if not isinstance(body, dict):
        raise Forbidden(f"{what}: the body is not a JSON object")
    _check_fields(body, CONFIG, what)
    host = body.get("HostConfig")
    host = {} if host is None else host
    if not isinstance(host, dict):
        raise Forbidden(f"{what}: HostConfig is not an object")
    _check_fields(host, HOST_CONFIG, what)
    network = host.get("NetworkMode")
    if network not in (None, "", "none") and body.get("NetworkDisabled") is not True:
        raise Forbidden(f"{what}: a network (only none, or networking disabled)")
    networking = body.get("NetworkingConfig") or {}
    if not isinstance(networking, dict) or not _empty(networking.get("EndpointsConfig")):
        raise Forbidden(f"{what}: network endpoints are not allowed")
    if set(networking) - {"EndpointsConfig"}:
        raise Forbidden(f"{what}: NetworkingConfig fields other than EndpointsConfig")
    for key in ("Cmd", "Entrypoint", "Env"):
        if not (_strings(body.get(key)) or isinstance(body.get(key), str)):
            raise Forbidden(f"{what}: {key} is not a list of strings")
    volumes = _mounts(host.get("Mounts"), what)
    return {**body, "Labels": _labels(body, client, what)}, volumes


def check_volume_create(body: object, client: str) -> dict[str, Any]:
    """The volume create body to forward (labelled with the client)."""
    what = "volume create"
    if not isinstance(body, dict):
        raise Forbidden(f"{what}: the body is not a JSON object")
    if set(body) - {"Name", "Driver", "DriverOpts", "Labels"}:
        raise Forbidden(f"{what}: fields other than Name, Driver, DriverOpts, Labels")
    if body.get("Driver") not in (None, "", "local"):
        raise Forbidden(f"{what}: only the local driver")
    if not _empty(body.get("DriverOpts")):
        raise Forbidden(f"{what}: driver options (a bind mount in disguise) are not allowed")
    name = body.get("Name")
    if not isinstance(name, str) or re.fullmatch(_ID, name) is None:
        raise Forbidden(f"{what}: a volume needs a name")
    return {**body, "Labels": _labels(body, client, what)}


def owned(labels: object, client: str) -> bool:
    """Whether labels say the client created it through this proxy."""
    return (
        isinstance(labels, dict)
        and labels.get(LABEL_NODE) == client
        and bool(labels.get(LABEL_BUILD))
    )


_NUMERIC_USER = re.compile(r"([0-9]+)(?::([0-9]+))?")


def check_start(container: Mapping[str, Any], client: str) -> None:
    """A container starts only as a sandbox (see the module docstring); ``container`` is its
    inspection (``GET /containers/<id>/json``)."""
    what = "container start"
    config = container.get("Config") or {}
    host = container.get("HostConfig") or {}
    if not owned(config.get("Labels"), client):
        raise Forbidden(f"{what}: not a container of {client}")
    user = _NUMERIC_USER.fullmatch(str(config.get("User") or ""))
    if user is None or int(user.group(1)) == 0 or (user.group(2) or "1") == "0":
        raise Forbidden(f"{what}: the user must be numeric and not root ({config.get('User')!r})")
    drop = [str(c).upper().removeprefix("CAP_") for c in host.get("CapDrop") or []]
    if "ALL" not in drop:
        raise Forbidden(f"{what}: every capability must be dropped")
    if not _security(host.get("SecurityOpt")) or not host.get("SecurityOpt"):
        raise Forbidden(f"{what}: no-new-privileges is required")
    if host.get("ReadonlyRootfs") is not True:
        raise Forbidden(f"{what}: the root file system must be read-only")
    if host.get("NetworkMode") != "none":
        raise Forbidden(f"{what}: the network must be none")
    if host.get("Privileged") or not (host.get("Memory") or 0) > 0:
        raise Forbidden(f"{what}: unprivileged with a memory limit only")
    if not (host.get("PidsLimit") or 0) > 0:
        raise Forbidden(f"{what}: a process limit is required")
    if host.get("Binds") or any(m.get("Type") == "bind" for m in container.get("Mounts") or []):
        raise Forbidden(f"{what}: a bind mount")
