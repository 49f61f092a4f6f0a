"""Profile: a YAML description of one install, read and validated into a model.

Every problem is reported with its key path and YAML line; nothing here raises a
traceback at the user. The JSON Schema (profile.schema.json) is the contract for
shape; the checks after it are the ones a schema cannot say (addresses, overlaps,
combinations of settings). Three rooms: this module (the model, the entry points,
the shape check, the assembly), profile_yaml.py (YAML with line numbers) and
profile_sections.py (one reader per section, and the checks across sections).
"""

from __future__ import annotations

import json
from dataclasses import field, replace
from pathlib import Path
from itertools import filterfalse

from . import profile_sections as sections
from .matrix import ROLES
from .problems import ProblemError, clip, read_text, shorten
from .profile_paths import balancer_kind, read_paths
from .profile_sections import ANYWHERE, PEER_DEFAULTS  # noqa: F401 (public names)
from .profile_yaml import dotted, line_of, read_yaml, type_name, where
from .records import dataclass

SCHEMA_PATH = Path(__file__).with_name("profile.schema.json")
PEER_NAME_PATTERN = "^[a-z][a-z0-9_]{0,30}$"


class ProfileError(ProblemError):
    """One or more problems in a profile; str() lists them all."""


@dataclass(frozen=True)
class Profile:
    """A profile as read and checked: the model every later stage uses."""

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
    nomad_servers: str = "in_cluster"  # or external: a role of their own (4.8+)
    container_runtime: str = "docker"  # the Nomad clients'; or podman (4.10)

    def roles(self) -> tuple[str, ...]:
        """The install's roles: the Nomad servers are one only outside the cluster
        (inside it they are pods on the Kubernetes nodes)."""
        return tuple(
            r for r in ROLES if r != "nomad_servers" or self.nomad_servers == "external"
        )

    # aws.network_acls: a network ACL per role's subnets (see generator/nacl.py)
    network_acls: bool = False
    nat_gateways_in: str | None = None  # the role whose subnets hold the NAT gateways

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


def _schema_digest() -> str:
    """The schema file's digest: the shipped validator records the one it was made
    from (the rest of what it is made from is code, which its staleness test covers)."""
    import hashlib

    return hashlib.sha256(SCHEMA_PATH.read_bytes()).hexdigest()


def _validator():
    """(check, the exception it raises): the validation schema's check as compiled
    ahead of time (profile_validator.py, made by scripts/compile_schema.py), or
    compiled now if the schema has changed."""
    from . import profile_validator

    if profile_validator.SCHEMA_SHA256 == _schema_digest():
        return profile_validator.validate, profile_validator.JsonSchemaValueException
    import fastjsonschema

    return (
        fastjsonschema.compile(_validation_schema()),
        fastjsonschema.JsonSchemaValueException,
    )


def _first_problem(data) -> str:
    """fastjsonschema's own message for data (which fails the schema): the shipped
    check says only where."""
    import fastjsonschema

    try:
        fastjsonschema.compile(_validation_schema())(data)
    except fastjsonschema.JsonSchemaValueException as exc:
        return exc.message
    return "does not match the schema"


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
        profile, problems = _build(data, lines, source)
    if problems:
        if version is not None:
            problems.append(
                f"{source}: checked as server_version {version!r}, the version given"
                " on the command line"
            )
        raise ProfileError(problems)
    return profile


def _read_yaml(text: str, source: str) -> tuple[object, dict]:
    return read_yaml(text, source, ProfileError)


# --- shape: JSON Schema -------------------------------------------------------


def _schema_problems(data, lines, source) -> list[str]:
    # A compiled validator answers "valid?" in a fraction of jsonschema's import
    # time; jsonschema, which lists every problem with its path, runs only when the
    # answer is no.
    check, invalid = _validator()
    try:
        check(data)
        return _whole_number_problems(data, lines, source)
    except invalid:
        pass
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(_validation_schema())
    problems = []
    errors = sorted(
        validator.iter_errors(data),
        key=lambda e: (
            line_of(lines, e.absolute_path),
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
            at = where(source, lines, path)
            problems.append(f"{at}: {dotted(path) or 'top level'}: {message}")
    return problems or [f"{source}: {_first_problem(data)}"]


def _whole_number_problems(data, lines, source) -> list[str]:
    """JSON Schema counts 1024.0 as an integer; a port or a quota is written 1024:
    a float where the schema says integer would reach the targets as 1024.0."""
    if not _has_float(data):  # nearly every profile: no schema to read
        return []
    schema = _validation_schema()
    problems = []
    for path, value in _floats_at_integers(schema, schema, data, ()):
        at = where(source, lines, path)
        # The schema has passed: the float is whole (1024.0), or it would have failed.
        problems.append(
            f"{at}: {dotted(path)}: expected a whole number, got {shorten(value)};"
            f" write {int(value)}"
        )
    return problems


def _has_float(data) -> bool:
    if isinstance(data, float):
        return True
    if isinstance(data, dict):
        return any(map(_has_float, data.values()))
    if isinstance(data, list):
        # Address lists are long lists of strings: skip them at C speed.
        return any(map(_has_float, filterfalse(str.__instancecheck__, data)))
    return False


def _floats_at_integers(root, schema, data, path):
    """(path, value) of each float in `data` where `schema` expects an integer; walks
    only where the schema describes the data (not the address lists)."""
    if "$ref" in schema:
        schema = root["$defs"][schema["$ref"].rsplit("/", 1)[1]]
    for part in schema.get("allOf", ()):
        yield from _floats_at_integers(root, part, data, path)
    if isinstance(data, float):
        kinds = schema.get("type", ())
        if "integer" in (kinds if isinstance(kinds, list) else [kinds]):
            yield path, data
    elif isinstance(data, dict):
        known = schema.get("properties", {})
        extra = schema.get("additionalProperties")
        for key, value in data.items():
            inner = known.get(key, extra if isinstance(extra, dict) else None)
            if inner:
                yield from _floats_at_integers(root, inner, value, path + (key,))
    elif isinstance(data, list) and isinstance(schema.get("items"), dict):
        for i, value in enumerate(data):
            yield from _floats_at_integers(root, schema["items"], value, path + (i,))


# aws.existing_groups says what kind of group is passed in; its ID is known only to
# the code that creates or looks the group up.
_GROUP_IDS = (
    "; a security group ID (sg-...) goes to the Terraform module's"
    " existing_security_group_ids (CloudFormation: the Existing<Role>SecurityGroupId"
    " parameter), not to the profile"
)


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
            if path == ("aws", "existing_groups"):
                message += _GROUP_IDS
            out.append((path + (key,), message))
        return out
    if error.validator == "required":
        missing = error.message.split("'")[1]
        return [(path, f"missing required key {missing!r}")]
    if error.validator == "type":
        expected = schema["type"]
        got = type_name(error.instance)
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
        message = f"{shorten(error.instance)} is not one of: {options}"
        if path[:2] == ("aws", "existing_groups"):
            message += _GROUP_IDS
        return [(path, message)]
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
    "^[a-z][-a-z0-9]{4,28}[a-z0-9]$": "is not a valid GCP project ID: 6-30"
    " lowercase letters, digits and hyphens, starting with a letter and not ending"
    " with a hyphen",
    "^(?:(?:https://www\\.googleapis\\.com/compute/v1/)?projects/[a-z][-a-z0-9]{4,28}"
    "[a-z0-9]/global/networks/)?[a-z](?:[-a-z0-9]{0,61}[a-z0-9])?$": "is not a GCP"
    " network: give its name (1-63 lowercase letters, digits and dashes, starting"
    " with a letter, not ending with a dash) or its path"
    " projects/PROJECT/global/networks/NAME",
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


# --- meaning: the sections, read and checked (profile_sections.py) -----------------


def _build(data, lines, source) -> tuple[Profile | None, list[str]]:
    """The model of schema-valid `data`, with every problem found. None (with
    problems) when an address cannot be read: the checks across sections need them.
    A profile with problems is not to be used; parse_profile raises them."""
    at = sections.Source(source, lines)
    found = at.findings()
    # First: the kind decides load_balancer.transparent, which the checks read.
    found.take(balancer_kind(data, at))
    network = found.take(sections.read_network(data, at))
    host_fw = found.take(sections.read_host_firewall(data, at))
    peers = found.take(sections.read_peers(data, at))
    site_flows = found.take(sections.read_site_flows(data, peers, at))
    lb_ips = found.take(sections.read_load_balancer(data, at))
    if found.problems:
        return None, found.problems
    peers = found.take(sections.read_nomad(data, network, peers, at))

    # In this order, which is the order of the messages.
    for checked in (
        sections.check_peer_names(data, site_flows, at),
        sections.check_site_flows(site_flows, peers, at),
        sections.check_quotas(data, at),
        sections.check_network(network, at),
        sections.check_ephemeral_ports(data, at),
        sections.check_vm_service(data, network, peers, at),
        sections.check_cloud_sections(data, network, at),
        sections.check_cluster_ranges(network, at),
        sections.check_host_firewall(data, host_fw, at),
        sections.check_network_acls(data, network, at),
    ):
        found.merge(checked)
    facing = found.take(sections.read_internet_facing(data, network, peers, lb_ips, at))
    found.merge(sections.check_ssh_and_ui_exposure(data, peers, at))
    found.merge(sections.check_name(data, at))

    profile = Profile(
        name=data["name"],
        server_version=data["server_version"],
        cloud=data["cloud"],
        access=data["access"],
        stateful=data.get("stateful", True),
        ephemeral_ports=tuple(data.get("ephemeral_ports", (1024, 65535))),
        include_obsolete=data.get("include_obsolete", False),
        transparent_lb=data.get("load_balancer", {}).get("transparent", False),
        assign_public_ip=data.get("vm_service", {}).get("assign_public_ip", False),
        vpc_cidr=network.vpc,
        subnets=network.subnets,
        dns_servers=network.dns,
        nat_gateway_ips=network.nat,
        peers=peers,
        gcp=data.get("gcp", {}),
        aws=data.get("aws", {}),
        lb_internet_facing=facing,
        lb_public_ips=lb_ips,
        pod_cidrs=network.pods,
        service_cidrs=network.services,
        host_firewall=host_fw,
        quotas=data.get("quotas", {}),
        warnings=tuple(found.warnings),
        source=source,
        site_flows=tuple(site_flows),
        nomad_servers=sections.nomad_servers(data),
        container_runtime=sections.container_runtime(data),
        network_acls=data.get("aws", {}).get("network_acls", False),
        nat_gateways_in=data.get("aws", {}).get("nat_gateways_in"),
    )
    fields = found.take(read_paths(data, profile, at))
    return replace(profile, **fields, warnings=tuple(found.warnings)), found.problems
