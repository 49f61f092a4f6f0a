"""Profile: a YAML description of one install, read and validated into a model.

Every problem is reported with its key path and YAML line; nothing here raises a
traceback at the user. The JSON Schema (profile.schema.json) is the contract for
shape; the checks below it are the ones a schema cannot say (addresses, overlaps,
combinations of settings).
"""

from __future__ import annotations

import functools
import ipaddress
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path

from .addresses import network_text
from .matrix import ROLES
from .problems import ProblemError, clip, read_text, shorten
from .profile_paths import balancer_kind, read_paths

SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")
# The peer lists the page's flows use, with their defaults; any other name under
# peers: is a named list for site flows.
PEER_DEFAULTS = {
    "external": ["0.0.0.0/0"],
    "internet": ["0.0.0.0/0"],
    "vcs": [],
    "ssh_admin": [],
    "ssh_rerun": ["0.0.0.0/0"],
    "nomad_client_public_ips": [],
    "vm_public_ips": [],
}
PEER_NAME_PATTERN = "^[a-z][a-z0-9_]{0,30}$"
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
    aws: dict = field(default_factory=dict)
    # Internet-facing balancer: Nomad clients reach it on its public address.
    lb_internet_facing: bool = False
    lb_public_ips: tuple[str, ...] = ()
    pod_cidrs: tuple[str, ...] = ()
    service_cidrs: tuple[str, ...] = ()
    host_firewall: dict = field(default_factory=dict)  # see generator/hostfw.py
    quotas: dict = field(default_factory=dict)  # see generator/quotas.py
    warnings: tuple[str, ...] = ()
    source: str = ""
    site_flows: tuple = ()  # catalog.Flow, one per site_flows entry
    # Path settings (generator/profile_paths.py, meaning in generator/paths.py).
    lb: dict = field(default_factory=dict)  # load_balancer.kind and its options
    egress_proxy: dict = field(default_factory=dict)  # addresses, port
    webhooks: dict = field(default_factory=dict)  # from, cidrs

    def with_version(self, version: str) -> Profile:
        """This profile on another release, without the version's checks: for a
        profile known to be valid on both. Commands use load_profile(path, version)."""
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
    _end_patterns(schema)
    return schema


def _schema_digest(schema: dict) -> str:
    import hashlib

    return hashlib.sha256(json.dumps(schema, sort_keys=True).encode()).hexdigest()


def _validator():
    """The validation schema's check as compiled ahead of time (profile_validator.py,
    made by scripts/compile_schema.py), or compiled now if the schema has changed."""
    import fastjsonschema

    from . import profile_validator

    schema = _validation_schema()
    if profile_validator.SCHEMA_SHA256 == _schema_digest(schema):
        return profile_validator.validate
    return fastjsonschema.compile(schema)


def _end_patterns(node) -> None:
    """'$' ends a JSON Schema pattern at the end of the text; Python's re (which
    jsonschema uses as is) also matches before a final newline: say \\Z instead, so
    both validators agree."""
    if isinstance(node, dict):
        if isinstance(node.get("pattern"), str) and node["pattern"].endswith("$"):
            node["pattern"] = node["pattern"][:-1] + "\\Z"
        for value in node.values():
            _end_patterns(value)
    elif isinstance(node, list):
        for value in node:
            _end_patterns(value)


def check_version(version: str) -> None:
    allowed = load_schema()["properties"]["server_version"]["enum"]
    if version not in allowed:
        raise ProfileError(
            [
                f"server version {shorten(version)} is not known; expected one of {', '.join(allowed)}"
            ]
        )


def load_profile(path: str | Path, version: str | None = None) -> Profile:
    """A profile from a file, or from standard input when `path` is '-'; `version`
    (a command's --server-version) replaces the file's server_version before
    validation, so every check runs for that release."""
    source = "<stdin>" if str(path) == "-" else str(path)
    return parse_profile(read_text(path, ProfileError), source, version)


def parse_profile(
    text: str, source: str = "<profile>", version: str | None = None
) -> Profile:
    if version is not None:
        check_version(version)
    data, lines = _read_yaml(text, source)
    if version is not None and isinstance(data, dict):
        data["server_version"] = version
    problems = _schema_problems(data, lines, source)
    if not problems:
        problems, warnings = [], []
        error, warn = _reporters(lines, source, problems, warnings)
        balancer_kind(data, lambda path: path in lines, error)
        profile = _build(data, lines, source, problems, warnings)
        if not problems:
            profile = _with_paths(data, profile, lines, source, problems, warnings)
    if problems:
        if version is not None:
            problems.append(
                f"{source}: checked as server_version {version!r}, the version given"
                " on the command line"
            )
        raise ProfileError(problems)
    return profile


def _reporters(lines, source, problems, warnings):
    """error(path, message, near=None) and warn(path, message), placed by key path."""

    def error(path, message, near=None):
        # A key that is absent has no line: point at the one that asked for it.
        line_path = path if path in lines or near is None else near
        problems.append(
            f"{_where(source, lines, line_path)}: {_dotted(path)}: {message}"
        )

    def warn(path, message):
        text = f"{_dotted(path)}: {message}"
        if text not in warnings:
            warnings.append(text)

    return error, warn


def _with_paths(data, profile, lines, source, problems, warnings) -> Profile:
    """The profile with its path settings read (generator/profile_paths.py)."""
    error, warn = _reporters(lines, source, problems, warnings)

    def cidrs(path, values) -> tuple[str, ...]:
        nets = (
            _parse_cidr(value, path + (i,), error) for i, value in enumerate(values)
        )
        return tuple(str(net) for net in nets if net is not None)

    if data.get("load_balancer", {}).get("kind") == "nlb":
        # The NLB's own subnets: its address and its health checks' source.
        ignored = (
            "network.subnets.load_balancer: ignored: the load balancer is transparent"
        )
        warnings[:] = [w for w in warnings if w != ignored]
    fields = read_paths(data, profile, cidrs, error, warn)
    return replace(profile, **fields, warnings=tuple(warnings))


# --- YAML with line numbers -------------------------------------------------


MAX_DEPTH = 64  # a profile nests 4 levels deep
MAX_NODES = 1_000_000  # values once aliases are expanded; 70,000 addresses are 71,000
MERGE_TAG = "tag:yaml.org,2002:merge"
# Scalars kept as written: a profile holds no dates, and '=' is YAML 1.1's "value" key.
TEXT_TAGS = ("tag:yaml.org,2002:timestamp", "tag:yaml.org,2002:value", MERGE_TAG)


class _Refused(Exception):
    def __init__(self, mark, message):
        super().__init__(message)
        self.mark, self.message = mark, message


@functools.lru_cache(maxsize=None)
def _loader_class():
    """libyaml's parser (ten times faster on long lists) under a composer that takes
    plain data only: no tags, no recursive aliases, bounded depth."""
    import yaml
    from yaml.composer import Composer
    from yaml.events import AliasEvent, CollectionStartEvent, ScalarEvent

    class PlainComposer(Composer):
        def compose_node(self, parent, index):
            event = self.peek_event()
            if isinstance(event, AliasEvent):
                if event.anchor in self.open_anchors:
                    raise _Refused(
                        event.start_mark,
                        f"alias *{event.anchor} is inside the value it names"
                        " (a recursive alias)",
                    )
                return super().compose_node(parent, index)
            if isinstance(event, (ScalarEvent, CollectionStartEvent)) and event.tag:
                tag = event.tag.replace("tag:yaml.org,2002:", "!!")
                raise _Refused(
                    event.start_mark,
                    f"YAML tag {shorten(tag)} is not allowed: a profile is plain"
                    " data; remove the tag",
                )
            if len(self.open_anchors) + self.depth >= MAX_DEPTH:
                raise _Refused(
                    event.start_mark, f"nested more than {MAX_DEPTH} levels deep"
                )
            self.depth += 1
            self.open_anchors.append(event.anchor)
            try:
                return super().compose_node(parent, index)
            finally:
                self.open_anchors.pop()
                self.depth -= 1

    try:
        from yaml.cyaml import CParser as parser
    except ImportError:  # PyYAML built without libyaml
        parser = None

    class Loader(PlainComposer, parser or yaml.SafeLoader, yaml.resolver.Resolver):
        def __init__(self, stream):
            (parser or yaml.SafeLoader).__init__(self, stream)
            Composer.__init__(self)
            yaml.resolver.Resolver.__init__(self)
            self.open_anchors, self.depth = [], 0

    return Loader


def _read_yaml(text: str, source: str) -> tuple[object, dict]:
    import yaml

    try:
        if any(mark in text for mark in "!&*"):  # maybe tags, anchors or aliases
            loader = _loader_class()(text)
            try:
                node = loader.get_single_node()
            finally:
                loader.dispose()
            if node is not None:
                _expanded_size(node, {})
        else:  # plain data: libyaml's own composer, twice as fast
            node = yaml.compose(
                text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)
            )
    except _Refused as exc:
        raise ProfileError([f"{source}:{exc.mark.line + 1}: {exc.message}"]) from None
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character
        code = char if isinstance(char, int) else ord(char)
        raise ProfileError(
            [f"{source}:{line}: not valid YAML: character #x{code:04x} is not allowed"]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ProfileError([f"{where}: not valid YAML: {problem}"]) from None
    if node is None:
        raise ProfileError([f"{source}: the profile is empty"])
    lines: dict[tuple, int] = {}
    problems: list[str] = []
    constructor = yaml.constructor.SafeConstructor()
    data = _walk(node, (), lines, problems, source, constructor)
    if problems:
        raise ProfileError(problems)
    return data, lines


def _expanded_size(node, memo: dict) -> int:
    """How many values `node` stands for once aliases are expanded; refuses an
    alias bomb (a few lines that expand to billions) before anything is built."""
    import yaml

    if id(node) in memo:
        return memo[id(node)]
    if isinstance(node, yaml.SequenceNode):
        size = 1 + sum(_expanded_size(item, memo) for item in node.value)
    elif isinstance(node, yaml.MappingNode):
        size = 1 + sum(
            _expanded_size(k, memo) + _expanded_size(v, memo) for k, v in node.value
        )
    else:
        size = 1
    if size > MAX_NODES:
        raise _Refused(
            node.start_mark,
            f"more than {MAX_NODES:,} values once aliases are expanded; not read",
        )
    memo[id(node)] = size
    return size


def _scalar(node, constructor):
    if node.tag in TEXT_TAGS:
        return node.value
    return constructor.construct_object(node)


def _walk(node, path, lines, problems, source, constructor):
    import yaml

    lines[path] = node.start_mark.line + 1

    def problem(at, message):
        problems.append(
            f"{source}:{at.start_mark.line + 1}: {_dotted(path) or 'top level'}: {message}"
        )

    if len(path) >= MAX_DEPTH:
        problem(node, f"nested more than {MAX_DEPTH} levels deep")
        return None

    if isinstance(node, yaml.MappingNode):
        out = {}
        merges = []
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                problem(key_node, "a key must be a string, not a list or a mapping")
                continue
            if key_node.tag == MERGE_TAG:
                merges.append(value_node)
                continue
            try:
                key = _scalar(key_node, constructor)
            except (yaml.YAMLError, ValueError, OverflowError):
                key = key_node.value
            if not isinstance(key, str):
                problem(key_node, f"key {shorten(key)} must be a string")
                continue
            if _CONTROL.search(key):
                problem(key_node, f"key {shorten(key)} holds a control character")
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
        # '<<: *defaults' (YAML merge keys): keys written in the mapping win, then
        # the merged mappings in order.
        for value_node in merges:
            items = (
                value_node.value
                if isinstance(value_node, yaml.SequenceNode)
                else [value_node]
            )
            for item in items:
                if not isinstance(item, yaml.MappingNode):
                    problem(item, "'<<' merges a mapping or a list of mappings")
                    continue
                merged_lines: dict[tuple, int] = {}
                merged = _walk(item, path, merged_lines, problems, source, constructor)
                for key, value in merged.items():
                    if key not in out:
                        out[key] = value
                        for p, line in merged_lines.items():
                            if p[: len(path) + 1] == path + (key,):
                                lines[p] = line
        return out
    if isinstance(node, yaml.SequenceNode):
        return [
            _walk(item, path + (i,), lines, problems, source, constructor)
            for i, item in enumerate(node.value)
        ]
    try:
        value = _scalar(node, constructor)
    except (yaml.YAMLError, ValueError, OverflowError):
        problem(node, f"cannot read the value {shorten(node.value)}")
        return None
    if isinstance(value, str) and _CONTROL.search(value):
        problem(node, f"{shorten(value)} holds a control character (a line break?)")
    return value


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def _dotted(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    if len(out) > 120:  # a deep or long path, as a hostile input makes
        out = f"{out[:50]}...{out[-50:]}"
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
        _validator()(data)
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
        import difflib  # only for a bad profile: costs 2 ms at start-up

        for key in extra:
            message = f"unknown key {shorten(key)}"
            guess = (  # a hostile key may be megabytes long: no guess for it
                difflib.get_close_matches(key, known, n=1, cutoff=0.6)
                if len(key) <= 100
                else []
            )
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
        if path == ("server_version",) and type(error.instance) in (int, float):
            return [(path, _unquoted_version(error.instance))]
        return [
            (
                path,
                f"expected {_article(expected)}, got {got} {shorten(error.instance)}",
            )
        ]
    if error.validator == "minLength":
        return [(path, "must not be empty")]
    if (
        error.validator == "pattern"
        and schema["pattern"].removesuffix("\\Z") + "$" == PEER_NAME_PATTERN
    ):
        return [
            (
                path + (error.instance,),  # a key: its own line, not its mapping's
                f"{shorten(error.instance)} is not a valid peer list name: use lowercase"
                " letters, digits and underscores, starting with a letter (at most 31"
                " characters)",
            )
        ]
    if error.validator == "enum":
        options = ", ".join(str(v) for v in schema["enum"])
        return [(path, f"{shorten(error.instance)} is not one of: {options}")]
    if error.validator == "pattern":
        pattern = schema["pattern"].removesuffix("\\Z") + "$"
        what = PATTERNS.get(pattern, f"does not match the pattern {pattern}")
        return [(path, f"{shorten(error.instance)} {what}")]
    if error.validator == "maxLength":
        return [(path, f"is longer than {schema['maxLength']} characters")]
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
        return [(path, f"{shorten(error.instance)} is out of range {low}-{high}")]
    return [(path, clip(error.message))]


PATTERNS = {
    "^[a-z][a-z0-9-]{0,30}[a-z0-9]$": "is not a valid name: use 2 to 32 characters,"
    " lowercase letters, digits and dashes, starting with a letter and not ending"
    " with a dash",
    "^[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$": "is not a valid GCP network tag: 1-63"
    " lowercase letters, digits and dashes, starting with a letter",
    "^[a-z0-9](?:[a-z0-9._-]{0,62}[a-z0-9])?@[a-z0-9](?:[a-z0-9.-]*[a-z0-9])?"
    "\\.[a-z]{2,}$": "is not a service account e-mail address"
    " (name@project.iam.gserviceaccount.com, ASCII)",
}


def _unquoted_version(number) -> str:
    """YAML reads 4.5 as a number; 4.10 even as 4.1, so say so only where it matters."""
    text = str(number)
    message = f'the version must be a quoted string: write "{text}", not {text}'
    if text.endswith(".1"):
        message += f' (YAML reads 4.10 as {text}: if you meant 4.10, write "4.10")'
    return message


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
    if isinstance(expected, list):
        return " or ".join(_article(e) for e in expected)
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
        text = f"{_dotted(path)}: {message}"
        if text not in warnings:
            warnings.append(text)

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
    for key in PEER_DEFAULTS:
        peers[key] = cidrs(("peers", key), peers_in.get(key, PEER_DEFAULTS[key]))
    for key in [k for k in peers_in if k not in PEER_DEFAULTS]:  # in file order
        if key in ROLES or key == "dns":
            what = "a role" if key in ROLES else "the DNS servers (network.dns_servers)"
            error(("peers", key), f"{key!r} already names {what}; choose another name")
        peers[key] = cidrs(("peers", key), peers_in[key])
    site_flows = _site_flows(data, peers, transparent, error)

    lb_section = data.get("load_balancer", {})
    lb_ips = cidrs(("load_balancer", "public_ips"), lb_section.get("public_ips", []))

    if problems:
        return None
    _check_named_peers(peers_in, site_flows, error, warn)
    _check_site_flows(site_flows, peers, warn)

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

    low, high = data.get("ephemeral_ports", (1024, 65535))
    if low > high:
        error(
            ("ephemeral_ports",),
            f"[{low}, {high}] is reversed; write the lower port first: [{high}, {low}]",
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
        # Nomad clients -> VMs on 22 is current on every 4.x line. Behind the NAT
        # gateways, the VMs see those (generator/paths.py).
        ports = "22 and 2376" if vm_rows else "22"
        if not peers["nomad_client_public_ips"] and not nat and version != "3":
            warn(
                ("peers", "nomad_client_public_ips"),
                f"empty with assign_public_ip and no network.nat_gateway_ips: VMs accept {ports} from 0.0.0.0/0; list the Nomad clients' public IPs, or the NAT gateways they leave through, to narrow it",
            )
        if not peers["vm_public_ips"] and version != "3":
            warn(
                ("peers", "vm_public_ips"),
                f"empty with assign_public_ip: the egress to the VMs on {ports} goes to 0.0.0.0/0; list the VMs' public range (an Elastic IP pool, the region's EC2 ranges) to narrow it",
            )
    else:
        for key in ("nomad_client_public_ips", "vm_public_ips"):
            if peers[key]:
                warn(("peers", key), "ignored: assign_public_ip is false")

    needed = [r for r in ROLES if not (r == "load_balancer" and transparent)]
    if "aws" in data and cloud != "aws":
        error(("aws",), f"the aws section only applies to cloud: aws, not {cloud}")
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
        # AWS targets address roles by security group: a subnet is needed only by a
        # target that addresses roles by address (iptables), checked when it is chosen.
        for role in needed if cloud != "aws" else ():
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

    # 3.x's nomad, vm-service and output-processor balancers are internal by default.
    facing = lb_section.get(
        "internet_facing",
        data["access"] == "public" and cloud in ("aws", "gcp") and version != "3",
    )
    facing_path = ("load_balancer", "internet_facing")
    if facing:
        why = (
            ""
            if "internet_facing" in lb_section
            else " (the default with access: public; set load_balancer.internet_facing:"
            " false for an internal one)"
        )
        if not nat and not peers["nomad_client_public_ips"]:
            error(
                ("network", "nat_gateway_ips"),
                f"the load balancer is internet-facing{why}: Nomad clients reach it on"
                " its public address, through the NAT gateways or their own public IPs;"
                " list network.nat_gateway_ips or peers.nomad_client_public_ips",
                near=facing_path if "internet_facing" in lb_section else ("access",),
            )
        if not lb_ips:
            warn(
                ("load_balancer", "public_ips"),
                "empty with an internet-facing load balancer: the Nomad clients' egress"
                " to it goes to 0.0.0.0/0; list its public addresses to narrow it",
            )
    elif lb_ips:
        warn(("load_balancer", "public_ips"), "ignored: the load balancer is internal")

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

    if cloud == "aws" and data["name"].startswith("sg-"):
        error(
            ("name",),
            f"{data['name']!r} starts with 'sg-': AWS refuses security group names that"
            " start with sg- (they would read as group IDs); choose another name",
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
        aws=data.get("aws", {}),
        lb_internet_facing=facing,
        lb_public_ips=lb_ips,
        pod_cidrs=pods,
        service_cidrs=services,
        host_firewall=host_fw,
        quotas=data.get("quotas", {}),
        warnings=tuple(warnings),
        source=source,
        site_flows=tuple(site_flows),
    )


# --- site flows ------------------------------------------------------------------


def _site_flows(data, peers, transparent, error) -> list:
    """The site_flows section, read by the catalog's flow parser; problems go to error."""
    raw_flows = data.get("site_flows", [])
    if not raw_flows:
        return []
    from .catalog import PEERS, load_catalog, read_flow

    catalog = load_catalog()
    page_ids = {f.id for f in catalog.flows}
    known = (*ROLES, *PEERS, *peers)
    flows, ids = [], {}
    for i, raw in enumerate(raw_flows):
        base = ("site_flows", i)
        flow = read_flow(
            raw,
            dict.fromkeys(known),
            lambda path, message, base=base: error(base + path, message),
            site=True,
            isolated=catalog.isolated_roles,
            key=f"site_flows[{i}]",
        )
        if "id" in raw:
            if flow.id in page_ids:
                error(
                    base + ("id",), f"{flow.id!r} is a page flow's id; choose another"
                )
            elif flow.id in ids:
                error(
                    base + ("id",),
                    f"{flow.id!r} is already the id of site_flows[{ids[flow.id]}]",
                )
            ids.setdefault(flow.id, i)
        if transparent and "load_balancer" in flow.sources:
            error(
                base + ("from",),
                "the load balancer is transparent: traffic leaves from the Kubernetes"
                " nodes; write kubernetes_nodes",
            )
        flows.append(flow)
    return flows


def _check_named_peers(peers_in, site_flows, error, warn) -> None:
    used = {end for f in site_flows for end in f.sources + f.destinations}
    for key in [k for k in peers_in if k not in PEER_DEFAULTS]:
        if key in used:
            continue
        import difflib  # only for an unused peer list

        guess = difflib.get_close_matches(key, list(PEER_DEFAULTS), n=1, cutoff=0.8)
        if guess:
            # Most likely a misspelt page peer, whose default would apply silently.
            error(
                ("peers", key),
                f"unknown key {key!r}; did you mean {guess[0]!r}? (no site flow uses"
                " it as a named peer list)",
            )
        else:
            warn(("peers", key), "a named peer list that no site flow uses")


def _check_site_flows(site_flows, peers, warn) -> None:
    """Warnings for site flows that open SSH or a whole role to anywhere."""
    from .matrix import ROLE_TITLES

    for i, flow in enumerate(site_flows):  # one flow per entry, in order
        path = ("site_flows", i)
        ports = flow.ports or ((1, 65535),)
        tcp = any(p in ("tcp", "all") for p in flow.protocols)
        ssh = tcp and any(lo <= 22 <= hi for lo, hi in ports)
        whole = "all" in flow.protocols or any(
            lo <= 1 and hi >= 65535 for lo, hi in ports
        )
        for src in flow.sources:
            for dst in flow.destinations:
                role, peer = (dst, src) if dst in ROLES else (src, dst)
                if peer in ROLES or peer == "dns":
                    continue
                if not any(c in ANYWHERE for c in peers.get(peer, ())):
                    continue
                side = "from" if peer == src else "to"
                if whole:
                    warn(
                        path,
                        f"opens every port of {ROLE_TITLES[role]} {side} 0.0.0.0/0"
                        f" (peers.{peer}); narrow the peer list or the ports",
                    )
                elif ssh and peer == src:
                    warn(
                        path,
                        f"opens SSH (tcp/22) on {ROLE_TITLES[role]} to the whole"
                        f" internet (peers.{peer}); narrow it to your users' ranges",
                    )


def _parse_cidr(value, path, error):
    if not isinstance(value, str):
        error(
            path,
            f"expected an address or CIDR as a string, got {_type_name(value)} {shorten(value)}",
        )
        return None
    if "%" in value:  # fe80::1%eth0: a zone means nothing in a firewall rule
        error(
            path,
            f"{shorten(value)}: a zone index (%...) is not allowed; write the address alone",
        )
        return None
    try:
        return network_text(value)
    except ValueError:
        pass
    try:
        fixed = ipaddress.ip_network(value, strict=False)
    except ValueError:
        error(
            path, f"{shorten(value)} is not a valid IPv4 or IPv6 address or CIDR block"
        )
        return None
    error(path, f"{shorten(value)} has host bits set; did you mean {fixed}?")
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
