"""cluster.yaml, checked offline: Ray's own config validation, then our security rules.

Ray validates the schema (``prepare_config`` fills defaults, ``validate_config`` runs jsonschema and its
cross-checks) but not what a node may be reached on: :func:`security_problems` checks that, and the
negative tests show it flags what Ray's validation lets through.
"""

from __future__ import annotations

import copy
import ipaddress
import re
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CLUSTER_YAML = ROOT / "cluster.yaml"
DOCS = ROOT / "docs" / "cluster.md"
PLACEHOLDERS = ("123456789012", "subnet-REPLACE-ME", "sg-REPLACE-ME", "YOUR-BUCKET")

# Services without authentication (or SSH): never reachable from an IP range, private ones included.
SENSITIVE_PORTS = {
    22: "SSH",
    5000: "MLflow",
    6379: "Ray GCS",
    8265: "Ray dashboard / job API",
    10001: "Ray client",
}
KEY_PATTERNS = (
    re.compile(r"(AKIA|ASIA)[0-9A-Z]{16}"),
    re.compile(r"aws_secret_access_key", re.IGNORECASE),
    re.compile(r"aws_session_token", re.IGNORECASE),
)
OPEN_WORLD = ("0.0.0.0/0", "::/0")
# Inside a VPC: RFC 1918 and IPv6 unique-local ranges (ipaddress's is_private also admits documentation ranges).
PRIVATE_NETS = tuple(
    ipaddress.ip_network(n) for n in ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "fc00::/7")
)


# --- the checker ---------------------------------------------------------------------


def _walk(obj: Any, path: str = "") -> Iterator[tuple[str, Any, Any]]:
    """(path, key, value) for every mapping entry in a nested config."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield f"{path}.{k}" if path else str(k), k, v
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")


def _commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")  # fmt: skip
    return [c for k in keys for c in config.get(k) or []]


def _is_private(cidr: str) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return any(net.version == p.version and net.subnet_of(p) for p in PRIVATE_NETS)


def _rule_problems(where: str, rule: dict, ports: dict[int, str]) -> list[str]:
    sources = [r.get("CidrIp") for r in rule.get("IpRanges", [])]
    sources += [r.get("CidrIpv6") for r in rule.get("Ipv6Ranges", [])]
    out = []
    for cidr in sources:
        if cidr in OPEN_WORLD:
            out.append(f"{where}: ingress from {cidr} (the whole internet)")
        elif not _is_private(cidr):
            out.append(f"{where}: ingress from public range {cidr}")
    if rule.get("PrefixListIds"):
        out.append(f"{where}: ingress from a prefix list, which this check cannot verify")
    if sources:
        lo, hi = rule.get("FromPort", -1), rule.get("ToPort", -1)
        every_port = str(rule.get("IpProtocol")) == "-1" or lo == -1
        for port, name in sorted(ports.items()):
            if every_port or lo <= port <= hi:
                out.append(f"{where}: port {port} ({name}) open to {', '.join(sources)}")
    return out


def security_problems(config: dict, text: str | None = None) -> list[str]:
    """What in a cluster config exposes a port, a key or a node; empty when nothing does.

    ``text``: the file as written, so that keys in comments are caught too.
    """
    dumped = yaml.safe_dump(config)
    out = [f"text matches {p.pattern!r}: credentials belong in instance profiles" for p in KEY_PATTERNS
           if p.search(dumped) or (text is not None and p.search(text))]  # fmt: skip
    out += [f"{cidr} appears in a config value" for cidr in OPEN_WORLD if cidr in dumped]
    commands = _commands(config)
    ports = dict(SENSITIVE_PORTS)
    for c in commands:
        for m in re.finditer(r"--dashboard-port[= ](\d+)", c):
            ports[int(m.group(1))] = "Ray dashboard / job API"
    for path, key, value in _walk(config):
        if key == "IpPermissions":
            for i, rule in enumerate(value or []):
                out += _rule_problems(f"{path}[{i}]", rule, ports)
    if not config.get("provider", {}).get("use_internal_ips"):
        out.append("provider.use_internal_ips is not true: nodes would get public IPs")
    for name, node_type in config.get("available_node_types", {}).items():
        nc = node_type.get("node_config", {})
        interfaces = nc.get("NetworkInterfaces") or []
        if not nc.get("SecurityGroupIds") and not any(ni.get("Groups") for ni in interfaces):
            out.append(
                f"{name}: no SecurityGroupIds: Ray would create a group with SSH open to 0.0.0.0/0 "
                "(ray/autoscaler/_private/aws/config.py, _create_default_ssh_inbound_rules)"
            )
        if any(ni.get("AssociatePublicIpAddress") for ni in interfaces):
            out.append(f"{name}: a network interface asks for a public IP")
        profile = nc.get("IamInstanceProfile") or {}
        if not (profile.get("Arn") or profile.get("Name")):
            out.append(f"{name}: no IamInstanceProfile (S3 access must come from an instance profile)")
    head_starts = [
        c for c in config.get("head_start_ray_commands") or [] if re.search(r"ray start .*--head", c)
    ]
    if not head_starts:
        out.append("head_start_ray_commands: no `ray start --head`")
    out += [f"head `ray start` without --dashboard-host=127.0.0.1: {c!r}" for c in head_starts
            if "--dashboard-host=127.0.0.1" not in c]  # fmt: skip
    for c in commands:
        if re.search(r"--dashboard-host[= ]?(0\.0\.0\.0|::|\[::\])(\s|$)", c):
            out.append(f"dashboard bound to every interface: {c!r}")
        if "mlflow server" in c and re.search(r"--host[= ]?['\"]?(0\.0\.0\.0|::)['\"]?(\s|$)", c):
            out.append(f"MLflow bound to every interface: {c!r}")
    return out


# --- fixtures ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def text() -> str:
    return CLUSTER_YAML.read_text()


@pytest.fixture
def config(text: str) -> dict:
    return yaml.safe_load(text)


def _ray_validate(config: dict) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config

    prepared = prepare_config(copy.deepcopy(config))
    validate_config(prepared)
    return prepared


# --- the real file -------------------------------------------------------------------


def test_ray_prepare_and_validate_accept_it(config):
    prepared = _ray_validate(config)
    assert prepared["cluster_name"] == "vizsweep"
    assert prepared["provider"]["type"] == "aws" and prepared["provider"]["region"] == "us-west-2"
    assert prepared["provider"]["cache_stopped_nodes"] is True
    # prepare_config prepends the common setup_commands to head and worker setup
    assert prepared["worker_setup_commands"][: len(config["setup_commands"])] == config["setup_commands"]


def test_security_rules_pass(config, text):
    assert security_problems(config, text) == []


def test_node_types(config):
    types = config["available_node_types"]
    head = types[config["head_node_type"]]
    assert head["resources"] == {"CPU": 0}, "trials and Ray Data tasks must land on GPU workers"
    g5 = types["gpu_g5"]
    assert g5["node_config"]["InstanceType"] == "g5.xlarge"
    assert (g5["min_workers"], g5["max_workers"]) == (0, 8)
    for name, t in types.items():
        if name == config["head_node_type"]:
            continue
        assert t["resources"]["GPU"] >= 1, name
        assert t["node_config"]["InstanceMarketOptions"] == {"MarketType": "spot"}, name
    assert sum(t.get("max_workers", 0) for t in types.values()) <= config["max_workers"]


def test_setup_is_pinned_to_the_lock(config):
    import ray

    setup = " ".join(config["setup_commands"])
    assert "-r requirements.lock" in setup and "--no-deps -e ." in setup
    assert f'"ray[default]=={ray.__version__}"' in setup, "the dashboard extras must match the locked Ray"
    assert f"ray=={ray.__version__}" in (ROOT / "requirements.lock").read_text().splitlines()


def test_mlflow_on_the_head_and_its_uri_on_the_workers(config):
    head = " ".join(config["head_start_ray_commands"])
    assert "mlflow server" in head
    assert "--backend-store-uri sqlite:////home/ubuntu/mlflow/mlflow.db" in head
    assert "--artifacts-destination s3://" in head and "--port 5000" in head
    workers = " ".join(config["worker_start_ray_commands"])
    assert "MLFLOW_TRACKING_URI=http://$RAY_HEAD_IP:5000" in workers
    assert "AWS_REGION=us-west-2" in head and "AWS_REGION=us-west-2" in workers


def test_commands_are_valid_bash(config):
    for cmd in _commands(config):
        r = subprocess.run(["bash", "-n", "-c", cmd], capture_output=True, text=True)
        assert r.returncode == 0, f"{cmd!r}: {r.stderr}"


def test_docs_name_every_placeholder(text):
    docs = DOCS.read_text()
    for p in PLACEHOLDERS:
        assert p in text, f"{p} is no longer in cluster.yaml: update PLACEHOLDERS and docs/cluster.md"
        assert p in docs, f"docs/cluster.md must say what replaces {p}"


# --- the checker flags what Ray lets through ---------------------------------------


def test_injected_open_ingress_is_flagged_though_ray_accepts_it(text, tmp_path):
    rule = "      - {IpProtocol: tcp, FromPort: 22, ToPort: 22, IpRanges: [{CidrIp: 0.0.0.0/0}]}"
    injected = re.sub(
        r"^  cache_stopped_nodes:.*$",
        lambda m: (
            f"{m.group(0)}\n  security_group:\n    GroupName: vizsweep-open\n    IpPermissions:\n{rule}"
        ),
        text,
        count=1,
        flags=re.MULTILINE,
    )
    assert injected != text
    copy_path = tmp_path / "cluster-open.yaml"
    copy_path.write_text(injected)
    config = yaml.safe_load(copy_path.read_text())
    _ray_validate(config)  # Ray's validation has no opinion on ingress rules
    problems = security_problems(config, copy_path.read_text())
    assert any("ingress from 0.0.0.0/0" in p for p in problems), problems
    assert any("port 22 (SSH)" in p for p in problems), problems


def _add_rule(rule: dict) -> Callable[[dict], None]:
    def mutate(c: dict) -> None:
        c["provider"]["security_group"] = {"GroupName": "x", "IpPermissions": [rule]}

    return mutate


def _set(path: tuple[str, ...], value: Any) -> Callable[[dict], None]:
    def mutate(c: dict) -> None:
        node = c
        for key in path[:-1]:
            node = node[key]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value

    return mutate


def _edit_commands(key: str, old: str, new: str) -> Callable[[dict], None]:
    def mutate(c: dict) -> None:
        c[key] = [cmd.replace(old, new) for cmd in c[key]]

    return mutate


_FAKE_KEY = "AKIA" + "Q" * 16  # built here so this file holds no key-shaped literal


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (_add_rule({"IpProtocol": "-1", "Ipv6Ranges": [{"CidrIpv6": "::/0"}]}), "ingress from ::/0"),
        (_add_rule({"IpProtocol": "tcp", "FromPort": 8265, "ToPort": 8265, "IpRanges": [{"CidrIp": "10.0.0.0/16"}]}),
         "port 8265 (Ray dashboard"),
        (_add_rule({"IpProtocol": "tcp", "FromPort": 443, "ToPort": 443, "IpRanges": [{"CidrIp": "52.94.0.0/22"}]}),
         "public range 52.94.0.0/22"),
        (_set(("setup_commands",), [f"export AWS_ACCESS_KEY_ID={_FAKE_KEY}"]), "AKIA"),
        (_set(("setup_commands",), ["echo aws_secret_access_key=x >> ~/.aws/credentials"]), "aws_secret_access_key"),
        (_edit_commands("head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"),
         "dashboard bound to every interface"),
        (_edit_commands("head_start_ray_commands", '--host "$MLFLOW_HOST"', "--host 0.0.0.0"),
         "MLflow bound to every interface"),
        (_set(("available_node_types", "gpu_g5", "node_config", "SecurityGroupIds"), None),
         "gpu_g5: no SecurityGroupIds"),
        (_set(("available_node_types", "gpu_g5_12x", "node_config", "IamInstanceProfile"), None),
         "gpu_g5_12x: no IamInstanceProfile"),
        (_set(("provider", "use_internal_ips"), False), "use_internal_ips"),
    ],
    ids=["ipv6-open", "dashboard-port", "public-cidr", "access-key", "secret-key", "dashboard-host",
         "mlflow-host", "no-security-group", "no-instance-profile", "public-ips"],
)  # fmt: skip
def test_checker_flags(config, mutate, expected):
    bad = copy.deepcopy(config)
    mutate(bad)
    problems = security_problems(bad)
    assert any(expected in p for p in problems), problems
