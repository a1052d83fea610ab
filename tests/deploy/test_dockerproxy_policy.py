"""The Docker API proxy's allow-list (synchronicity/dockerproxy/policy.py), pure.

Every call the build sandbox makes is allowed and every other call refused: pulls, builds,
loads, exec, networks, the swarm; container creates that reach the host (privileges,
capabilities, bind mounts and volume driver options that are bind mounts in disguise, host
network and namespaces, devices, unconfined security options, other runtimes, log drivers,
restart policies, unknown fields); listings without the build label filter; images written
outside the builder's repositories. A container starts only as a sandbox. The bodies are what
docker-py sends for the calls of builder/container.py and builder/volumes.py.
"""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import parse_qs, quote

import pytest
from docker.types import ContainerConfig, DriverConfig, HostConfig, Mount

from builder.container import LABEL_BUILD, LABEL_OWNER
from synchronicity.dockerproxy.policy import (
    BODY_JSON,
    BODY_STREAM,
    LABEL_NODE,
    Forbidden,
    Repositories,
    check_container_create,
    check_start,
    check_volume_create,
    owned,
    route,
)

REPOS = Repositories()
ME = "witness-1"
ID = "5d888cd52a14e59bfcc3d163f188d220af4bcf07b5a73770642bd372ef33f9ad"
BUILD_FILTER = quote(json.dumps({"label": [LABEL_BUILD]}))
OTHER_FILTER = quote(json.dumps({"label": ["other"]}))
V = "/v1.41"
BUILD = "synchronicity-build"
STAGING = "synchronicity-env-staging"


def sandbox_body(**host: Any) -> dict[str, Any]:
    """What builder/container.py's create sends (docker-py, API 1.41)."""
    options: dict[str, Any] = {
        "network_mode": "none",
        "read_only": True,
        "mounts": [Mount("/build/src", "vol-1", type="volume", read_only=True, no_copy=True)],
        "tmpfs": {"/tmp": "rw,noexec,nosuid,nodev,size=1m,mode=1777"},
        "cap_drop": ["ALL"],
        "security_opt": ["no-new-privileges"],
        "mem_limit": 1 << 30,
        "memswap_limit": 1 << 30,
        "nano_cpus": 2 * 10**9,
        "cpuset_cpus": "0,1",
        "pids_limit": 1024,
        "shm_size": 16 << 20,
        "ipc_mode": "private",
    }
    options.update(host)
    config = ContainerConfig(
        "1.41",
        "synchronicity-env:0123456789abcdef",
        ["/bin/sh", "-c", "cargo build"],
        user="1000:1000",
        working_dir="/build/src",
        environment={"PATH": "/opt/rust/bin:/usr/bin:/bin"},
        labels={LABEL_BUILD: "job", LABEL_OWNER: "witness-1:7"},
        hostname="builder-a",
        stdin_open=False,
        tty=False,
    )
    config["HostConfig"] = HostConfig(version="1.41", **options)
    return {key: value for key, value in config.items() if value is not None}


def filler_body() -> dict[str, Any]:
    """builder/volumes.py's filler: never started, networking disabled, root."""
    config = ContainerConfig(
        "1.41", "synchronicity-env:0123456789abcdef", ["/bin/true"],
        network_disabled=True, labels={LABEL_BUILD: "job", LABEL_OWNER: "witness-1:7"},
    )  # fmt: skip
    config["HostConfig"] = HostConfig(
        version="1.41",
        read_only=True,
        mounts=[Mount("/fill/0", "vol-1", type="volume", read_only=False, no_copy=True)],
    )
    return {key: value for key, value in config.items() if value is not None}


def allowed(method: str, target: str) -> str:
    return route(method, target, ME, REPOS).rule


def refused(method: str, target: str) -> str:
    with pytest.raises(Forbidden) as caught:
        route(method, target, ME, REPOS)
    return str(caught.value)


# ----- calls ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "target", "rule"),
    [
        ("GET", "/version", "engine"),
        ("GET", f"{V}/_ping", "engine"),
        ("HEAD", "/_ping", "engine"),
        ("GET", f"{V}/info", "engine"),
        ("GET", f"{V}/images/json?only_ids=0&all=0&filters={BUILD_FILTER}", "image-read"),
        ("GET", f"{V}/images/sha256:abc/json", "image-read"),
        ("GET", f"{V}/images/synchronicity-env:0123/json", "image-read"),
        ("POST", f"{V}/images/sha256:abc/tag?tag=0123&repo=synchronicity-env", "image-tag"),
        ("DELETE", f"{V}/images/{STAGING}:ab-1-2?force=0&noprune=0", "image-delete"),
        (
            "POST",
            f"{V}/commit?container={ID}&repo=synchronicity-env-staging&tag=ab-1&changes=x",
            "commit",
        ),
        ("POST", f"{V}/containers/create", "container-create"),
        ("GET", f"{V}/containers/json?trunc_cmd=0&filters={BUILD_FILTER}", "container-list"),
        ("GET", f"{V}/containers/{ID}/json", "container-inspect"),
        ("POST", f"{V}/containers/{ID}/start", "container-start"),
        ("POST", f"{V}/containers/{ID}/attach?logs=1&stdout=1&stream=1", "container-attach"),
        ("POST", f"{V}/containers/{ID}/wait", "container-wait"),
        ("POST", f"{V}/containers/{ID}/kill?signal=SIGKILL", "container-kill"),
        ("GET", f"{V}/containers/{ID}/logs?stdout=1&stderr=1", "container-logs"),
        ("DELETE", f"{V}/containers/{ID}?v=False&link=False&force=True", "container-delete"),
        ("PUT", f"{V}/containers/{ID}/archive?path=%2Ffill%2F0", "archive-put"),
        ("POST", f"{V}/volumes/create", "volume-create"),
        ("GET", f"{V}/volumes?filters={BUILD_FILTER}", "volume-list"),
        ("GET", f"{V}/volumes/synchronicity-input-0123", "volume-inspect"),
        ("DELETE", f"{V}/volumes/synchronicity-input-0123?force=True", "volume-delete"),
    ],
)  # fmt: skip
def test_the_sandbox_calls_are_allowed(method: str, target: str, rule: str) -> None:
    assert allowed(method, target) == rule


def test_bodies_ids_and_filters_of_allowed_calls() -> None:
    importing = route(
        "POST", "/v1.41/images/create?fromSrc=-&repo=synchronicity-build&tag=0123", ME, REPOS
    )
    assert importing.body == BODY_STREAM
    assert route("PUT", f"/containers/{ID}/archive?path=/", ME, REPOS).body == BODY_STREAM
    assert route("POST", "/containers/create", ME, REPOS).body == BODY_JSON
    attach = route("POST", f"/v1.41/containers/{ID}/attach?stream=1", ME, REPOS)
    assert (attach.container, attach.upgrade) == (ID, True)
    commit = route(
        "POST", f"/commit?container={ID}&repo=synchronicity-env-staging&tag=a", ME, REPOS
    )
    assert commit.container == ID
    assert route("DELETE", "/volumes/v-1", ME, REPOS).volume == "v-1"
    # listings get the node's own label added to their filters
    listing = route("GET", f"/containers/json?all=1&filters={BUILD_FILTER}", ME, REPOS)
    filters = json.loads(parse_qs(listing.query)["filters"][0])
    assert filters == {"label": [LABEL_BUILD, f"{LABEL_NODE}={ME}"]}
    assert parse_qs(listing.query)["all"] == ["1"]
    volumes = route("GET", f"/volumes?filters={BUILD_FILTER}", "witness-2", REPOS)
    assert f"{LABEL_NODE}=witness-2" in json.loads(parse_qs(volumes.query)["filters"][0])["label"]
    # another image prefix, other repositories
    other = Repositories("hostb")
    assert route("POST", "/images/x/tag?repo=hostb-env&tag=t", ME, other).rule == "image-tag"
    with pytest.raises(Forbidden):
        route("POST", "/images/x/tag?repo=synchronicity-env&tag=t", ME, other)


@pytest.mark.parametrize(
    ("method", "target", "why"),
    [
        ("POST", f"{V}/images/create?fromImage=alpine&tag=latest", "never pulled"),
        ("POST", f"{V}/images/create?fromSrc=http://h/x.tar&repo={BUILD}&tag=x", "fromSrc=-"),
        ("POST", f"{V}/images/create?fromSrc=-&repo=synchronicity-node&tag=x", "only into"),
        ("POST", f"{V}/images/create?fromSrc=-&repo={BUILD}&tag=x&platform=y", "not allowed"),
        ("POST", f"{V}/images/load", "allow-list"),
        ("POST", f"{V}/build?t=x", "allow-list"),
        ("GET", f"{V}/images/synchronicity-env:0123/get", "allow-list"),
        ("POST", f"{V}/images/synchronicity-env:0123/push", "allow-list"),
        ("GET", f"{V}/images/search?term=x", "allow-list"),
        ("POST", f"{V}/images/prune", "allow-list"),
        ("POST", f"{V}/images/x/tag?repo=synchronicity-node&tag=abc", "only as"),
        ("POST", f"{V}/images/x/tag?repo=synchronicity-env&tag=abc&force=1", "force"),
        ("DELETE", f"{V}/images/synchronicity-env:0123", "only synchronicity-env-staging"),
        ("DELETE", f"{V}/images/synchronicity-node:0123", "only synchronicity-env-staging"),
        ("DELETE", f"{V}/images/sha256:0123", "only synchronicity-env-staging"),
        ("DELETE", f"{V}/images/synchronicity-env-staging:a?force=1", "force"),
        ("POST", f"{V}/commit?container={ID}&repo=synchronicity-env&tag=a", "only into"),
        ("POST", f"{V}/commit?repo=synchronicity-env-staging&tag=a", "no container"),
        ("POST", f"{V}/containers/create?name=witness-2", "not allowed"),
        ("GET", f"{V}/containers/json?all=1", "only a listing filtered"),
        ("GET", f"{V}/containers/json?all=1&filters={OTHER_FILTER}", "only a listing"),
        ("GET", f"{V}/containers/json?filters=notjson", "not JSON"),
        ("GET", f"{V}/volumes", "only a listing filtered"),
        ("POST", f"{V}/containers/{ID}/exec", "allow-list"),
        ("POST", f"{V}/exec/abc/start", "allow-list"),
        ("GET", f"{V}/containers/{ID}/archive?path=/", "allow-list"),
        ("HEAD", f"{V}/containers/{ID}/archive?path=/", "allow-list"),
        ("GET", f"{V}/containers/{ID}/export", "allow-list"),
        ("POST", f"{V}/containers/{ID}/update", "allow-list"),
        ("POST", f"{V}/containers/{ID}/rename?name=x", "allow-list"),
        ("POST", f"{V}/containers/{ID}/restart", "allow-list"),
        ("POST", f"{V}/containers/{ID}/attach?stdin=1&stream=1", "stdin"),
        ("DELETE", f"{V}/containers/{ID}?link=1", "link"),
        ("PUT", f"{V}/containers/{ID}/archive?path=/&unknown=1", "not allowed"),
        ("POST", f"{V}/containers/prune", "allow-list"),
        ("GET", f"{V}/networks", "allow-list"),
        ("POST", f"{V}/networks/create", "allow-list"),
        ("POST", f"{V}/networks/mesh/connect", "allow-list"),
        ("POST", f"{V}/swarm/init", "allow-list"),
        ("GET", f"{V}/plugins", "allow-list"),
        ("POST", f"{V}/secrets/create", "allow-list"),
        ("GET", f"{V}/events", "allow-list"),
        ("GET", f"{V}/system/df", "allow-list"),
        ("POST", f"{V}/session", "allow-list"),
        ("POST", f"{V}/auth", "allow-list"),
        ("GET", f"{V}/containers/../images/x/get", "not a path"),
        ("GET", f"{V}/containers/%2e%2e/json", "not a path"),
        ("GET", "images/json", "not a path"),
        ("POST", f"{V}/containers/create/../../build", "not a path"),
        ("PUT", f"{V}/containers/create", "allow-list"),
    ],
)  # fmt: skip
def test_everything_else_is_refused(method: str, target: str, why: str) -> None:
    assert why in refused(method, target)


# ----- container and volume bodies -----------------------------------------------------------


def test_the_sandbox_and_filler_creates_are_allowed_and_labelled() -> None:
    body, volumes = check_container_create(sandbox_body(), ME)
    assert volumes == ["vol-1"]
    assert body["Labels"] == {LABEL_BUILD: "job", LABEL_OWNER: "witness-1:7", LABEL_NODE: ME}
    assert {k: v for k, v in body.items() if k != "Labels"} == {
        k: v for k, v in sandbox_body().items() if k != "Labels"
    }
    filler, volumes = check_container_create(filler_body(), "witness-2")
    assert volumes == ["vol-1"] and filler["Labels"][LABEL_NODE] == "witness-2"
    # a node cannot claim another node's label
    claimed = sandbox_body()
    claimed["Labels"][LABEL_NODE] = "witness-2"
    assert check_container_create(claimed, ME)[0]["Labels"][LABEL_NODE] == ME


def docker_driver() -> DriverConfig:
    """A local volume whose driver options make it a bind mount of the host's /."""
    return DriverConfig("local", {"type": "none", "o": "bind", "device": "/"})


def _bind(source: str) -> Mount:
    return Mount("/host", source, type="bind")


@pytest.mark.parametrize(
    ("host", "why"),
    [
        ({"privileged": True}, "Privileged"),
        ({"cap_add": ["SYS_ADMIN"]}, "CapAdd"),
        ({"binds": {"/": {"bind": "/host", "mode": "ro"}}}, "Binds"),
        ({"mounts": [_bind("/")]}, "a bind mount"),
        ({"mounts": [Mount("/x", "", type="volume")]}, "name of an existing volume"),
        (
            {"mounts": [Mount("/x", "v", type="volume", driver_config=docker_driver())]},
            "driver configuration",
        ),
        ({"mounts": [Mount("/x", "npipe", type="npipe")]}, "npipe mount"),
        ({"network_mode": "host"}, "NetworkMode"),
        ({"network_mode": "bridge"}, "NetworkMode"),
        ({"network_mode": "container:abc"}, "NetworkMode"),
        ({"pid_mode": "host"}, "PidMode"),
        ({"ipc_mode": "host"}, "IpcMode"),
        ({"ipc_mode": "container:abc"}, "IpcMode"),
        ({"uts_mode": "host"}, "UTSMode"),
        ({"userns_mode": "host"}, "UsernsMode"),
        ({"cgroupns": "host"}, "CgroupnsMode"),
        ({"security_opt": ["seccomp=unconfined"]}, "SecurityOpt"),
        ({"security_opt": ["apparmor=unconfined"]}, "SecurityOpt"),
        ({"security_opt": ["label=disable"]}, "SecurityOpt"),
        ({"devices": ["/dev/sda:/dev/sda:rwm"]}, "Devices"),
        ({"device_cgroup_rules": ["a *:* rwm"]}, "DeviceCgroupRules"),
        ({"runtime": "nvidia"}, "Runtime"),
        ({"log_config": {"Type": "syslog", "Config": {"syslog-address": "udp://h:1"}}}, "Log"),
        ({"restart_policy": {"Name": "always"}}, "RestartPolicy"),
        ({"volumes_from": ["witness-2"]}, "VolumesFrom"),
        ({"sysctls": {"net.ipv4.ip_forward": "1"}}, "Sysctls"),
        ({"oom_kill_disable": True}, "OomKillDisable"),
        ({"group_add": ["docker"]}, "GroupAdd"),
        ({"extra_hosts": {"a": "1.2.3.4"}}, "ExtraHosts"),
        ({"dns": ["1.1.1.1"]}, "Dns"),
        ({"cgroup_parent": "/"}, "CgroupParent"),
        ({"storage_opt": {"size": "1G"}}, "StorageOpt"),
        ({"port_bindings": {8080: 80}}, "PortBindings"),
        ({"publish_all_ports": True}, "PublishAllPorts"),
        ({"links": {"log": "log"}}, "Links"),
        ({"volume_driver": "convoy"}, "VolumeDriver"),
    ],
)  # fmt: skip
def test_creates_that_reach_the_host_are_refused(host: dict[str, Any], why: str) -> None:
    with pytest.raises(Forbidden) as caught:
        check_container_create(sandbox_body(**host), ME)
    assert why in str(caught.value)


@pytest.mark.parametrize(
    ("change", "why"),
    [
        (lambda b: b.update(Volumes={"/anonymous": {}}), "Volumes"),
        (lambda b: b.update(ExposedPorts={"80/tcp": {}}), "ExposedPorts"),
        (lambda b: b.update(OpenStdin=True), "OpenStdin"),
        (lambda b: b.update(Unknown=1), "field Unknown"),
        (lambda b: b["HostConfig"].update(MaskedPaths=[]), "field MaskedPaths"),
        (lambda b: b["HostConfig"].update(ReadonlyPaths=[]), "field ReadonlyPaths"),
        (lambda b: b["HostConfig"].update(Unknown=1), "field Unknown"),
        (lambda b: b["HostConfig"].update(InitPath="/host/docker-init"), "InitPath"),
        (lambda b: b["HostConfig"].update(NetworkMode="default"), "a network"),
        (lambda b: b.update(NetworkingConfig={"EndpointsConfig": {"mesh": {}}}), "endpoints"),
        (lambda b: b.update(Labels={LABEL_OWNER: "x"}), "without the label"),
        (lambda b: b.update(Labels={LABEL_BUILD: 1}), "not strings"),
        (lambda b: b.update(HostConfig=[]), "not an object"),
        (lambda b: b.update(Cmd=[1]), "not a list of strings"),
    ],
)
def test_other_create_bodies_are_refused(change: Any, why: str) -> None:
    body = copy.deepcopy(sandbox_body())
    change(body)
    with pytest.raises(Forbidden) as caught:
        check_container_create(body, ME)
    assert why in str(caught.value)
    with pytest.raises(Forbidden):
        check_container_create([], ME)


def test_volume_creates() -> None:
    body = {"Name": "synchronicity-input-01", "Labels": {LABEL_BUILD: "job"}}
    assert check_volume_create(body, ME)["Labels"] == {LABEL_BUILD: "job", LABEL_NODE: ME}
    local = {**body, "Driver": "local", "DriverOpts": {}}
    assert check_volume_create(local, ME)["Driver"] == "local"
    for bad, why in [
        ({**body, "DriverOpts": {"type": "none", "o": "bind", "device": "/"}}, "disguise"),
        ({**body, "Driver": "convoy"}, "local driver"),
        ({**body, "Labels": {}}, "without the label"),
        ({"Labels": {LABEL_BUILD: "job"}}, "needs a name"),
        ({**body, "ClusterVolumeSpec": {}}, "fields other than"),
        ("x", "not a JSON object"),
    ]:
        with pytest.raises(Forbidden) as caught:
            check_volume_create(bad, ME)
        assert why in str(caught.value)


# ----- start ---------------------------------------------------------------------------------


def inspected(**changes: Any) -> dict[str, Any]:
    """``GET /containers/<id>/json`` of a sandbox this node created."""
    doc: dict[str, Any] = {
        "Id": ID,
        "Config": {"User": "1000:1000", "Labels": {LABEL_BUILD: "job", LABEL_NODE: ME}},
        "HostConfig": {
            "CapDrop": ["ALL"],
            "SecurityOpt": ["no-new-privileges"],
            "ReadonlyRootfs": True,
            "NetworkMode": "none",
            "Privileged": False,
            "Memory": 1 << 30,
            "PidsLimit": 1024,
            "Binds": None,
        },
        "Mounts": [{"Type": "volume", "Name": "vol-1"}, {"Type": "tmpfs"}],
    }
    for path, value in changes.items():
        section, key = path.split("__")
        doc[section][key] = value
    return doc


def test_only_a_sandbox_starts() -> None:
    check_start(inspected(), ME)
    check_start(inspected(Config__User="65534"), ME)
    check_start(inspected(HostConfig__CapDrop=["cap_all", "ALL"]), ME)
    refusals: list[tuple[dict[str, Any], str]] = [
        ({"Config__User": ""}, "not root"),
        ({"Config__User": "root"}, "not root"),
        ({"Config__User": "0"}, "not root"),
        ({"Config__User": "0:1000"}, "not root"),
        ({"Config__User": "1000:0"}, "not root"),
        ({"Config__User": "builder"}, "numeric"),
        ({"Config__Labels": {LABEL_BUILD: "job", LABEL_NODE: "witness-2"}}, "not a container"),
        ({"Config__Labels": {LABEL_NODE: ME}}, "not a container"),
        ({"HostConfig__CapDrop": ["NET_RAW"]}, "capability"),
        ({"HostConfig__SecurityOpt": None}, "no-new-privileges"),
        ({"HostConfig__ReadonlyRootfs": False}, "read-only"),
        ({"HostConfig__NetworkMode": "default"}, "network"),
        ({"HostConfig__Memory": 0}, "memory"),
        ({"HostConfig__PidsLimit": 0}, "process limit"),
        ({"HostConfig__PidsLimit": -1}, "process limit"),
        ({"HostConfig__Binds": ["/:/host"]}, "bind"),
    ]
    for changes, why in refusals:
        with pytest.raises(Forbidden) as caught:
            check_start(inspected(**changes), ME)
        assert why in str(caught.value), changes
    bound = inspected()
    bound["Mounts"].append({"Type": "bind", "Source": "/"})
    with pytest.raises(Forbidden):
        check_start(bound, ME)


def test_ownership_is_the_node_label_and_the_build_label() -> None:
    assert owned({LABEL_BUILD: "x", LABEL_NODE: ME}, ME)
    assert not owned({LABEL_BUILD: "x", LABEL_NODE: ME}, "witness-2")
    assert not owned({LABEL_NODE: ME}, ME)
    assert not owned({LABEL_BUILD: "x"}, ME)
    assert not owned(None, ME)
    assert not owned({"com.docker.compose.service": "log"}, ME)
