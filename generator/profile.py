"""Profile: a YAML description of one install, read and validated into a model.

Every problem is reported with its key path and YAML line; nothing here raises a
traceback at the user. The JSON Schema (profile.schema.json) is the contract for
shape; the checks below it are the ones a schema cannot say (addresses, overlaps,
combinations of settings).
"""

from __future__ import annotations

import difflib
import ipaddress
import json
from dataclasses import dataclass, field, replace
from pathlib import Path

from .matrix import ROLES
from .problems import ProblemError, read_text

SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")
PEER_DEFAULTS = {
    "external": ["0.0.0.0/0"],
    "internet": ["0.0.0.0/0"],
    "ssh_admin": [],
    "ssh_rerun": ["0.0.0.0/0"],
    "nomad_client_public_ips": [],
}
ANYWHERE = ("0.0.0.0/0", "::/0")


class ProfileError(ProblemError):
    """One or more problems in a profile; str() lists them all."""


@dataclass(frozen=True)
class Profile:
    name: str
    server_version: str
    cloud: str
    access: str
    stateful: bool
    ephemeral_ports: tuple[int, int]
    include_obsolete: bool
    transparent_lb: bool
    assign_public_ip: bool
    vpc_cidr: str | None
    subnets: dict[str, tuple[str, ...]]
    dns_servers: tuple[str, ...]
    nat_gateway_ips: tuple[str, ...]
    peers: dict[str, tuple[str, ...]]
    gcp: dict = field(default_factory=dict)
    pod_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    host_firewall: dict = field(default_factory=dict)  # see generator/hostfw.py
    quotas: dict = field(default_factory=dict)  # see generator/quotas.py
    warnings: tuple[str, ...] = ()
    source: str = ""

    def with_version(self, version: str) -> Profile:
        check_version(version)
        return replace(self, server_version=version)


def load_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def _validation_schema() -> dict:
    """The published schema less the per-address type check, which _parse_cidr makes
    with the same message for every address: checking 10,000 list items twice costs
    more than everything else a plan does."""
    schema = load_schema()
    del schema["$defs"]["cidr_list"]["items"]
    return schema


def check_version(version: str) -> None:
    allowed = load_schema()["properties"]["server_version"]["enum"]
    if version not in allowed:
        raise ProfileError(
            [
                f"server version {version!r} is not known; expected one of {', '.join(allowed)}"
            ]
        )


def load_profile(path: str | Path) -> Profile:
    path = Path(path)
    return parse_profile(read_text(path, ProfileError), str(path))


def parse_profile(text: str, source: str = "<profile>") -> Profile:
    data, lines = _read_yaml(text, source)
    problems = _schema_problems(data, lines, source)
    if problems:
        raise ProfileError(problems)
    problems, warnings = [], []
    profile = _build(data, lines, source, problems, warnings)
    if problems:
        raise ProfileError(problems)
    return profile


# --- YAML with line numbers -------------------------------------------------


def _read_yaml(text: str, source: str) -> tuple[object, dict]:
    import yaml

    try:
        # libyaml's parser where PyYAML was built with it: ten times faster on long lists.
        node = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError([f"{where}: not valid YAML: {problem}"]) from None
    if node is None:
        raise ProfileError([f"{source}: the profile is empty"])
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    constructor = yaml.SafeLoader(text)
    data = _walk(node, (), lines, problems, source, constructor)
    if problems:
        raise ProfileError(problems)
    return data, lines


def _walk(node, path, lines, problems, source, constructor):
    import yaml

    lines[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out = {}
        for key_node, value_node in node.value:
            key = constructor.construct_object(key_node)
            if not isinstance(key, str):
                problems.append(
                    f"{source}:{key_node.start_mark.line + 1}: {_dotted(path) or 'top level'}:"
                    f" key {key!r} must be a string"
                )
                continue
            if key in out:
                problems.append(
                    f"{source}:{key_node.start_mark.line + 1}: {_dotted(path + (key,))}:"
                    f" duplicate key (first at line {lines[path + (key,)]})"
                )
                continue
            out[key] = _walk(
                value_node, path + (key,), lines, problems, source, constructor
            )
            lines[path + (key,)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, path + (i,), lines, problems, source, constructor)
            for i, item in enumerate(node.value)
        ]
    return constructor.construct_object(node)


def _dotted(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def _line_of(lines, path) -> int:
    """The line of path, or of its nearest ancestor with one; 0 if none has."""
    path = tuple(path)
    while path and path not in lines:
        path = path[:-1]
    return lines.get(path, 0)


def _where(source, lines, path) -> str:
    line = _line_of(lines, path)
    return f"{source}:{line}" if line else source


# --- shape: JSON Schema -------------------------------------------------------


def _schema_problems(data, lines, source) -> list[str]:
    import fastjsonschema

    # A compiled validator answers "valid?" in a fraction of jsonschema's import
    # time; jsonschema, which lists every problem with its path, runs only when the
    # answer is no.
    try:
        fastjsonschema.compile(_validation_schema())(data)
        return []
    except fastjsonschema.JsonSchemaValueException as exc:
        first = f"{source}: {exc.message}"
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(_validation_schema())
    problems = []
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: (
            _line_of(lines, e.absolute_path),
            str(e.path),
            e.validator != "type",
        ),
    )
    seen = set()
    for error in errors:
        for path, message in _explain(error):
            if path in seen:  # one problem per key: its type before its value
                continue
            seen.add(path)
            where = _where(source, lines, path)
            problems.append(f"{where}: {_dotted(path) or 'top level'}: {message}")
    return problems or [first]


def _explain(error) -> list[tuple[tuple, str]]:
    path = tuple(error.absolute_path)
    schema = error.schema
    if error.validator == "additionalProperties":
        known = sorted(schema.get("properties", {}))
        extra = sorted(k for k in error.instance if k not in known)
        out = []
        for key in extra:
            message = f"unknown key {key!r}"
            guess = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            message += (
                f"; did you mean {guess[0]!r}?"
                if guess
                else f"; expected one of {', '.join(known)}"
            )
            out.append((path + (key,), message))
        return out
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return [(path, f"missing required key {missing!r}")]
    if error.validator == "type":
        expected = schema["type"]
        got = _type_name(error.instance)
        if path and path[-1] == "server_version" and isinstance(error.instance, float):
            return [
                (
                    path,
                    f'expected a quoted string such as "4.2", got the number {error.instance}'
                    " (YAML reads 4.10 as 4.1: quote the version)",
                )
            ]
        return [(path, f"expected {_article(expected)}, got {got} {error.instance!r}")]
    if error.validator == "enum":
        options = ", ".join(str(v) for v in schema["enum"])
        return [(path, f"{error.instance!r} is not one of: {options}")]
    if error.validator == "pattern":
        return [
            (
                path,
                f"{error.instance!r} is not a valid name: use lowercase letters, digits and"
                " dashes, starting with a letter (at most 32 characters)",
            )
        ]
    if error.validator in ("minItems", "maxItems"):
        return [
            (
                path,
                f"expected {error.validator_value if error.validator == 'maxItems' else 'at least ' + str(error.validator_value)}"
                f" item(s), got {len(error.instance)}",
            )
        ]
    if error.validator in ("minimum", "maximum"):
        low, high = schema.get("minimum", 1), schema.get("maximum", 65535)
        return [(path, f"{error.instance} is out of range {low}-{high}")]
    return [(path, error.message)]


def _type_name(value) -> str:
    return {
        bool: "a boolean",
        int: "a number",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a mapping",
        type(None): "nothing",
    }.get(type(value), type(value).__name__)


def _article(expected) -> str:
    return {
        "string": "a string",
        "boolean": "true or false",
        "array": "a list",
        "object": "a mapping",
        "integer": "a whole number",
    }.get(expected, str(expected))


# --- meaning: addresses and combinations -------------------------------------


def _build(data, lines, source, problems, warnings) -> Profile:
    def error(path, message, near=None):
        # A key that is absent has no line: point at the one that asked for it.
        line_path = path if path in lines or near is None else near
        problems.append(
            f"{_where(source, lines, line_path)}: {_dotted(path)}: {message}"
        )

    def warn(path, message):
        warnings.append(f"{_dotted(path)}: {message}")

    def cidrs(path, values) -> tuple[str, ...]:
        out = []
        for i, value in enumerate(values):
            net = _parse_cidr(value, path + (i,), error)
            if net is not None:
                out.append(str(net))
        return tuple(out)

    network = data["network"]
    peers_in = data["peers"]
    cloud = data["cloud"]
    transparent = data.get("load_balancer", {}).get("transparent", False)
    public_ip = data.get("vm_service", {}).get("assign_public_ip", False)

    vpc = None
    if "vpc_cidr" in network:
        parsed = _parse_cidr(network["vpc_cidr"], ("network", "vpc_cidr"), error)
        vpc = str(parsed) if parsed else None

    subnets = {
        role: cidrs(
            ("network", "subnets", role), network.get("subnets", {}).get(role, [])
        )
        for role in ROLES
    }
    dns = cidrs(("network", "dns_servers"), network["dns_servers"])
    nat = cidrs(("network", "nat_gateway_ips"), network.get("nat_gateway_ips", []))
    pods = cidrs(("network", "pod_cidrs"), network.get("pod_cidrs", []))
    services = cidrs(("network", "service_cidrs"), network.get("service_cidrs", []))
    host_fw = dict(data.get("host_firewall", {}))
    if "ntp_servers" in host_fw:
        host_fw["ntp_servers"] = cidrs(
            ("host_firewall", "ntp_servers"), host_fw["ntp_servers"]
        )
    peers = {}
    for key in (
        "external",
        "internet",
        "vcs",
        "ssh_admin",
        "ssh_rerun",
        "nomad_client_public_ips",
    ):
        peers[key] = cidrs(
            ("peers", key), peers_in.get(key, PEER_DEFAULTS.get(key, []))
        )

    if problems:
        return None

    from .quotas import profile_problems

    for path, message in profile_problems(data.get("quotas", {})):
        error(("quotas",) + path, message)
    _check_overlaps(subnets, error)
    if vpc:
        vpc_net = ipaddress.ip_network(vpc)
        for role, nets in subnets.items():
            for i, net in enumerate(nets):
                n = ipaddress.ip_network(net)
                if n.version != vpc_net.version or not n.subnet_of(vpc_net):
                    warn(
                        ("network", "subnets", role, i),
                        f"{net} is outside vpc_cidr {vpc}",
                    )
        for i, net in enumerate(dns):
            n = ipaddress.ip_network(net)
            outside = n.version != vpc_net.version or not n.subnet_of(vpc_net)
            if outside and not n.network_address.is_link_local:
                warn(
                    ("network", "dns_servers", i),
                    f"{net} is outside vpc_cidr {vpc}; the page asks for the DNS servers in the VPC",
                )

    version = data["server_version"]
    # The VM rows that assign_public_ip rewrites exist on 4.0-4.2 (and 4.3+ when kept).
    vm_rows = version in ("4.0", "4.1", "4.2") or data.get("include_obsolete", False)
    if public_ip:
        path = ("vm_service", "assign_public_ip")
        if cloud != "aws":
            error(
                path,
                f"assign_public_ip is an AWS EC2 setting; it cannot be true with cloud: {cloud}",
            )
        elif version == "3":
            error(
                path,
                "assign_public_ip has no rules on the 3.x page; it is documented from 4.0",
            )
        elif not nat and vm_rows:
            error(
                ("network", "nat_gateway_ips"),
                "assign_public_ip is true: list the cluster's NAT gateway addresses (the vm-service pod reaches VMs through them)",
                near=path,
            )
        if not peers["nomad_client_public_ips"] and vm_rows:
            warn(
                ("peers", "nomad_client_public_ips"),
                "empty with assign_public_ip: VMs accept 22 and 2376 from 0.0.0.0/0; list the Nomad clients' public IPs to narrow it",
            )
    elif peers["nomad_client_public_ips"]:
        warn(("peers", "nomad_client_public_ips"), "ignored: assign_public_ip is false")

    needed = [r for r in ROLES if not (r == "load_balancer" and transparent)]
    if cloud == "gcp":
        if not transparent:
            error(
                ("load_balancer", "transparent"),
                "GCP load balancers have no firewall of their own: set transparent: true so their rules apply to the Kubernetes nodes",
                near=("cloud",),
            )
        gcp = data.get("gcp", {})
        tags, accounts = gcp.get("tags", {}), gcp.get("service_accounts", {})
        for role in needed:
            if role == "load_balancer":
                continue
            if role in tags and role in accounts:
                error(
                    ("gcp", "tags", role),
                    "a role is addressed by a tag or a service account, not both (GCP rules cannot mix them)",
                )
            if not subnets[role]:
                error(
                    ("network", "subnets", role),
                    "missing: GCP egress rules reach a role only through its CIDR ranges",
                    near=("network", "subnets"),
                )
    else:
        if "gcp" in data:
            error(("gcp",), f"the gcp section only applies to cloud: gcp, not {cloud}")
        for role in needed:
            if not subnets[role]:
                error(
                    ("network", "subnets", role),
                    f"missing: on {cloud}, a role is addressed through its subnets",
                    near=("network", "subnets"),
                )
    for key, nets in (("pod_cidrs", pods), ("service_cidrs", services)):
        for i, net in enumerate(nets):
            n = ipaddress.ip_network(net)
            for role, role_nets in subnets.items():
                if any(n.overlaps(ipaddress.ip_network(o)) for o in role_nets):
                    error(
                        ("network", key, i),
                        f"{n} overlaps the {role} subnets; pod and service ranges"
                        " are the cluster's own",
                    )
    if cloud == "generic" and not host_fw.get("ntp_servers"):
        warn(
            ("host_firewall", "ntp_servers"),
            "empty: the host firewalls let no NTP through; list your time servers",
        )
    if transparent and subnets["load_balancer"]:
        warn(
            ("network", "subnets", "load_balancer"),
            "ignored: the load balancer is transparent",
        )

    for key in ("ssh_admin", "ssh_rerun"):
        if any(c in ANYWHERE for c in peers[key]):
            what = (
                "administrative SSH" if key == "ssh_admin" else "SSH into re-run jobs"
            )
            warn(
                ("peers", key),
                f"{what} is open to the whole internet; narrow it to your users' ranges",
            )
    if data["access"] == "vpn" and any(c in ANYWHERE for c in peers["external"]):
        warn(
            ("peers", "external"),
            "access is vpn but the UI is open to 0.0.0.0/0; narrow it to the VPN's range",
        )

    return Profile(
        name=data["name"],
        server_version=version,
        cloud=cloud,
        access=data["access"],
        stateful=data.get("stateful", True),
        ephemeral_ports=tuple(data.get("ephemeral_ports", (1024, 65535))),
        include_obsolete=data.get("include_obsolete", False),
        transparent_lb=transparent,
        assign_public_ip=public_ip,
        vpc_cidr=vpc,
        subnets=subnets,
        dns_servers=dns,
        nat_gateway_ips=nat,
        peers=peers,
        gcp=data.get("gcp", {}),
        pod_cidrs=pods,
        service_cidrs=services,
        host_firewall=host_fw,
        quotas=data.get("quotas", {}),
        warnings=tuple(warnings),
        source=source,
    )


def _parse_cidr(value, path, error):
    if not isinstance(value, str):
        error(
            path,
            f"expected an address or CIDR as a string, got {_type_name(value)} {value!r}",
        )
        return None
    try:
        return ipaddress.ip_network(value)
    except ValueError:
        pass
    try:
        fixed = ipaddress.ip_network(value, strict=False)
    except ValueError:
        error(path, f"{value!r} is not a valid IPv4 or IPv6 address or CIDR block")
        return None
    error(path, f"{value!r} has host bits set; did you mean {fixed}?")
    return None


def _check_overlaps(subnets, error) -> None:
    seen: list[tuple[ipaddress._BaseNetwork, str, int]] = []
    for role in ROLES:
        for i, net in enumerate(subnets[role]):
            n = ipaddress.ip_network(net)
            for other, other_role, j in seen:
                if (
                    other_role != role
                    and n.version == other.version
                    and n.overlaps(other)
                ):
                    error(
                        ("network", "subnets", role, i),
                        f"{n} overlaps {other} of {other_role}; roles need distinct subnets"
                        " so that rules can tell them apart",
                    )
            seen.append((n, role, i))
