"""Every class of bad input gets its exact message, with key path and YAML line."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from generator.profile import ProfileError, parse_profile

GOOD = """\
name: acme
server_version: "4.2"
cloud: aws
access: vpn
network:
  vpc_cidr: 10.0.0.0/16
  subnets:
    kubernetes_nodes: [10.0.0.0/20]
    nomad_clients: [10.0.16.0/20]
    external_vms: [10.0.32.0/20]
    load_balancer: [10.0.48.0/24]
  dns_servers: [10.0.0.2]
peers:
  external: [172.16.0.0/12]
  vcs: [192.0.2.0/24]
  ssh_rerun: [172.16.0.0/12]
"""

GCP = (
    GOOD.replace("cloud: aws", "cloud: gcp")
    .replace("  vpc_cidr: 10.0.0.0/16\n", "")
    .replace("    load_balancer: [10.0.48.0/24]\n", "")
    + "load_balancer: {transparent: true}\ngcp:\n  tags: {nomad_clients: TAG}\n"
)


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.yaml")
    return caught.value.problems


def test_good_profile_has_no_warnings_and_defaults():
    profile = parse_profile(GOOD, "p.yaml")
    assert profile.warnings == ()
    assert (
        profile.stateful and not profile.transparent_lb and not profile.assign_public_ip
    )
    assert profile.peers["internet"] == ("0.0.0.0/0",)
    assert profile.peers["ssh_admin"] == ()
    assert profile.dns_servers == ("10.0.0.2/32",)


CASES = [
    (
        "invalid CIDR",
        GOOD.replace("[10.0.16.0/20]", "[10.0.16.0/33]"),
        [
            "p.yaml:9: network.subnets.nomad_clients[0]: '10.0.16.0/33' is not a valid IPv4 or"
            " IPv6 address or CIDR block"
        ],
    ),
    (
        "host bits",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: [192.0.2.1/24]"),
        [
            "p.yaml:15: peers.vcs[0]: '192.0.2.1/24' has host bits set; did you mean 192.0.2.0/24?"
        ],
    ),
    (
        "unknown key",
        GOOD.replace("  subnets:", "  subnet:"),
        ["p.yaml:7: network.subnet: unknown key 'subnet'; did you mean 'subnets'?"],
    ),
    (
        "unknown key, nothing close",
        GOOD + "owner: blue\n",
        [
            "p.yaml:17: owner: unknown key 'owner'; expected one of access, aws, cloud, egress_proxy,"
            " ephemeral_ports,"
            " gcp, host_firewall, include_obsolete, load_balancer, name, network, nomad, peers, quotas,"
            " server_version, site_flows, stateful,"
            " vm_service, webhooks"
        ],
    ),
    (
        "wrong type",
        GOOD.replace("access: vpn", 'access: vpn\nstateful: "no"'),
        ["p.yaml:5: stateful: expected true or false, got a string 'no'"],
    ),
    (
        "list expected",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: 192.0.2.0/24"),
        ["p.yaml:15: peers.vcs: expected a list, got a string '192.0.2.0/24'"],
    ),
    (
        "address that is not a string",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: [192.0.2.0/24, 42]"),
        [
            "p.yaml:15: peers.vcs[1]: expected an address or CIDR as a string, got a number 42"
        ],
    ),
    (
        "unknown version",
        GOOD.replace('"4.2"', '"4.11"'),
        [
            "p.yaml:2: server_version: '4.11' is not one of: 3, 4.0, 4.1, 4.2, 4.3, 4.4, 4.5, 4.6,"
            " 4.7, 4.8, 4.9, 4.10"
        ],
    ),
    (
        "unquoted version",
        GOOD.replace('"4.2"', "4.10"),
        [
            'p.yaml:2: server_version: the version must be a quoted string: write "4.1",'
            ' not 4.1 (YAML reads 4.10 as 4.1: if you meant 4.10, write "4.10")'
        ],
    ),
    (
        "missing key",
        GOOD.replace("cloud: aws\n", ""),
        ["p.yaml:1: top level: missing required key 'cloud'"],
    ),
    (
        "gcp with assign_public_ip",
        GOOD.replace(
            "cloud: aws",
            "cloud: gcp\nload_balancer: {transparent: true}\n"
            "vm_service: {assign_public_ip: true}",
        ),
        [
            "p.yaml:5: vm_service.assign_public_ip: assign_public_ip is an AWS EC2 setting; it"
            " cannot be true with cloud: gcp"
        ],
    ),
    (
        "overlapping subnets",
        GOOD.replace("external_vms: [10.0.32.0/20]", "external_vms: [10.0.20.0/24]"),
        [
            "p.yaml:10: network.subnets.external_vms[0]: 10.0.20.0/24 overlaps 10.0.16.0/20 of"
            " nomad_clients; roles need distinct subnets so that rules can tell them apart"
        ],
    ),
    (
        "role with no address on generic",
        GOOD.replace("    nomad_clients: [10.0.16.0/20]\n", "").replace(
            "cloud: aws", "cloud: generic"
        ),
        [
            "p.yaml:7: network.subnets.nomad_clients: missing: on generic, a role is"
            " addressed through its subnets"
        ],
    ),
    (
        "role with no address on gcp",
        GOOD.replace(
            "cloud: aws", "cloud: gcp\nload_balancer: {transparent: true}"
        ).replace("    external_vms: [10.0.32.0/20]\n", ""),
        [
            "p.yaml:8: network.subnets.external_vms: missing: GCP egress rules reach a role only"
            " through its CIDR ranges"
        ],
    ),
    (
        "gcp load balancer that is not transparent",
        GOOD.replace("cloud: aws", "cloud: gcp"),
        [
            "p.yaml:3: load_balancer.transparent: GCP load balancers have no firewall of their own:"
            " set transparent: true so their rules apply to the Kubernetes nodes"
        ],
    ),
    (
        "assign_public_ip without NAT addresses",
        GOOD.replace("cloud: aws", "cloud: aws\nvm_service: {assign_public_ip: true}"),
        [
            "p.yaml:4: network.nat_gateway_ips: assign_public_ip is true: list the cluster's NAT"
            " gateway addresses (the vm-service pod reaches VMs through them)"
        ],
    ),
    (
        "duplicate key",
        GOOD + "cloud: gcp\n",
        ["p.yaml:17: cloud: duplicate key (first at line 3)"],
    ),
    (
        "bad name",
        GOOD.replace("name: acme", "name: Acme_Prod"),
        [
            "p.yaml:1: name: 'Acme_Prod' is not a valid name: use 2 to 32 characters,"
            " lowercase letters, digits and dashes, starting with a letter and not ending"
            " with a dash"
        ],
    ),
    ("not YAML", GOOD.replace("access: vpn", "access: [vpn"), None),
    ("empty", "", ["p.yaml: the profile is empty"]),
    # minItems beside a $ref: enforced by both validators.
    (
        "no DNS servers",
        GOOD.replace("dns_servers: [10.0.0.2]", "dns_servers: []"),
        ["p.yaml:12: network.dns_servers: expected at least 1 item(s), got 0"],
    ),
    (
        "no VCS",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: []"),
        ["p.yaml:15: peers.vcs: expected at least 1 item(s), got 0"],
    ),
    (
        "reversed ephemeral ports",
        GOOD + "ephemeral_ports: [65535, 1024]\n",
        [
            "p.yaml:17: ephemeral_ports: [65535, 1024] is reversed; write the lower"
            " port first: [1024, 65535]"
        ],
    ),
    (
        "IPv6 zone index",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: ['fe80::1%eth0']"),
        [
            "p.yaml:15: peers.vcs[0]: 'fe80::1%eth0': a zone index (%...) is not"
            " allowed; write the address alone"
        ],
    ),
    (
        "GCP tag too long",
        GCP.replace("TAG", "a" * 64),
        [
            f"p.yaml:17: gcp.tags.nomad_clients: '{'a' * 64}' is not a valid GCP"
            " network tag: 1-63 lowercase letters, digits and dashes, starting with a"
            " letter"
        ],
    ),
    (
        "GCP tag not ASCII",
        GCP.replace("TAG", "nömad"),
        [
            "p.yaml:17: gcp.tags.nomad_clients: 'nömad' is not a valid GCP network"
            " tag: 1-63 lowercase letters, digits and dashes, starting with a letter"
        ],
    ),
    (
        "GCP tag ends in a newline",
        GCP.replace("TAG", '"nomad\\n"'),
        [
            "p.yaml:17: gcp.tags.nomad_clients: 'nomad\\n' holds a control character"
            " (a line break?)"
        ],
    ),
    (
        "GCP service account not ASCII",
        GCP.replace(
            "tags: {nomad_clients: TAG}",
            "service_accounts: {nomad_clients: 'nömad@p.iam.gserviceaccount.com'}",
        ),
        [
            "p.yaml:17: gcp.service_accounts.nomad_clients:"
            " 'nömad@p.iam.gserviceaccount.com' is not a service account e-mail"
            " address (name@project.iam.gserviceaccount.com, ASCII)"
        ],
    ),
    (
        "a 10 MB value is shortened",
        GOOD.replace("access: vpn", "access: " + "v" * 10_000_000),
        [
            f"p.yaml:4: access: '{'v' * 40}'...(10000000 characters) is not one of:"
            " vpn, public"
        ],
    ),
]

# Found by hostile profiles (issue 23): each was accepted, and each made wrong rules.
SITE_FLOW = GOOD.replace("ssh_rerun:", "ssh_admin: [172.16.0.0/12]\n  ssh_rerun:") + (
    "site_flows:\n"
    "  - {from: ssh_admin, to: nomad_clients, protocol: PROTO, ports: PORTS,"
    " purpose: x}\n"
)
GCP_OK = GCP.replace("TAG", "nomad")
GCP_NETWORK = (
    "is not a GCP network: give its name (1-63 lowercase letters, digits and dashes,"
    " starting with a letter, not ending with a dash) or its path"
    " projects/PROJECT/global/networks/NAME"
)
GCP_PROJECT = (
    "is not a valid GCP project ID: 6-30 lowercase letters, digits and hyphens,"
    " starting with a letter and not ending with a hyphen"
)


def site_flow(protocol="tcp", ports="9100"):
    return SITE_FLOW.replace("PROTO", protocol).replace("PORTS", ports)


def with_cluster_ranges(pods, services=None):
    ranges = f"  pod_cidrs: {pods}\n"
    if services:
        ranges += f"  service_cidrs: {services}\n"
    return GOOD.replace("  dns_servers:", ranges + "  dns_servers:")


CASES += [
    (
        "IPv6 role subnet ::/0",
        GOOD.replace("[10.0.16.0/20]", "[10.0.16.0/20, '::/0']"),
        [
            "p.yaml:9: network.subnets.nomad_clients[1]: ::/0 is every IPv6 address,"
            " not a role's own range; list the subnets it really uses"
        ],
    ),
    (
        "IPv4 role subnet 0.0.0.0/0, the only role with subnets",
        GOOD.replace(
            "    kubernetes_nodes: [10.0.0.0/20]\n    nomad_clients: [10.0.16.0/20]\n"
            "    external_vms: [10.0.32.0/20]\n    load_balancer: [10.0.48.0/24]\n",
            "    nomad_clients: [0.0.0.0/0]\n",
        ),
        [
            "p.yaml:8: network.subnets.nomad_clients[0]: 0.0.0.0/0 is every IPv4"
            " address, not a role's own range; list the subnets it really uses"
        ],
    ),
    (
        "pod range ::/0",
        with_cluster_ranges("['::/0']"),
        [
            "p.yaml:12: network.pod_cidrs[0]: ::/0 is every IPv6 address, not the"
            " cluster's own range; list the subnets it really uses"
        ],
    ),
    (
        "float ephemeral port",
        GOOD + "ephemeral_ports: [1024.0, 65535]\n",
        [
            "p.yaml:17: ephemeral_ports[0]: expected a whole number, got 1024.0;"
            " write 1024"
        ],
    ),
    (
        "float quota",
        GOOD + "quotas: {aws: {inbound_rules_per_group: 60.0}}\n",
        [
            "p.yaml:17: quotas.aws.inbound_rules_per_group: expected a whole number,"
            " got 60.0; write 60"
        ],
    ),
    (
        "float site flow port",
        site_flow(ports="9100.0"),
        [
            "p.yaml:19: site_flows[0].ports: expected a whole number, got 9100.0; write 9100"
        ],
    ),
    (
        "base-60 ephemeral port (YAML 1.1 reads 65535)",
        GOOD + "ephemeral_ports: [1024, 18:12:15]\n",
        [
            "p.yaml:17: ephemeral_ports[1]: expected a whole number, got a string"
            " '18:12:15'"
        ],
    ),
    (
        "base-60 site flow port",
        site_flow(ports="18:12:15"),
        [
            "p.yaml:19: site_flows[0].ports: '18:12:15' is not a port: expected a"
            " number, a range such as 30000-32767 or [30000, 32767]"
        ],
    ),
    (
        "yes is not a boolean",
        GOOD.replace("access: vpn", "access: vpn\nstateful: yes"),
        ["p.yaml:5: stateful: expected true or false, got a string 'yes'"],
    ),
    (
        "site flow with no protocol",
        site_flow(protocol="[]"),
        [
            "p.yaml:19: site_flows[0].protocol: expected tcp, udp or all, or a list of"
            " tcp and udp"
        ],
    ),
    (
        "GCP project as a URL with a space",
        GCP_OK + "  project: 'https://evil.example/x y'\n",
        [f"p.yaml:18: gcp.project: 'https://evil.example/x y' {GCP_PROJECT}"],
    ),
    (
        "GCP project of 300 characters",
        GCP_OK + "  project: " + "a" * 300 + "\n",
        [
            f"p.yaml:18: gcp.project: '{'a' * 40}'...(300 characters) {GCP_PROJECT}",
        ],
    ),
    (
        "GCP network of 300 characters",
        GCP_OK + "  network: " + "a" * 300 + "\n",
        [f"p.yaml:18: gcp.network: '{'a' * 40}'...(300 characters) {GCP_NETWORK}"],
    ),
    (
        "GCP network as a URL elsewhere",
        GCP_OK + "  network: https://evil.example/projects/p/global/networks/n\n",
        [
            "p.yaml:18: gcp.network: 'https://evil.example/projects/p/global/networks/n'"
            f" {GCP_NETWORK}"
        ],
    ),
    (
        "GCP network with a space",
        GCP_OK + "  network: 'my net'\n",
        [f"p.yaml:18: gcp.network: 'my net' {GCP_NETWORK}"],
    ),
    (
        "GCP network of another project than gcp.project",
        GCP_OK
        + "  project: acme-ci\n  network: projects/other-project/global/networks/n\n",
        [
            "p.yaml:19: gcp.network: the network is project other-project's but the"
            " rules are made in gcp.project acme-ci: a firewall rule belongs to its"
            " network's project; set gcp.project to other-project or name a network"
            " of acme-ci"
        ],
    ),
    (
        "service range equal to the pod range",
        with_cluster_ranges("[10.64.0.0/14]", "[10.64.0.0/14]"),
        [
            "p.yaml:13: network.service_cidrs[0]: 10.64.0.0/14 is the pod range"
            " 10.64.0.0/14 (network.pod_cidrs); Kubernetes gives services and pods"
            " distinct ranges"
        ],
    ),
    (
        "service range inside the pod range",
        with_cluster_ranges("[10.64.0.0/14]", "[10.65.0.0/16]"),
        [
            "p.yaml:13: network.service_cidrs[0]: 10.65.0.0/16 overlaps the pod range"
            " 10.64.0.0/14 (network.pod_cidrs); Kubernetes gives services and pods"
            " distinct ranges"
        ],
    ),
]


def test_gcp_network_by_name_or_by_its_path():
    for network in (
        "shared",
        "projects/acme-ci/global/networks/shared",
        "https://www.googleapis.com/compute/v1/projects/acme-ci/global/networks/n",
    ):
        text = GCP_OK + f"  project: acme-ci\n  network: {network}\n"
        assert parse_profile(text, "p.yaml").gcp["network"] == network


def test_scalars_are_read_as_yaml_1_2():
    """No base 60, no yes/no/on/off booleans, no octal from a leading zero, no dates:
    what YAML 1.2's core schema says, not PyYAML's YAML 1.1."""
    from generator.profile import _read_yaml

    text = (
        "a: [yes, no, on, off, y, 18:12:15, 0777, 0o17, 0x1F, 1_000, 2024-01-01, =,"
        " true, False, ~, null, 1e3, .inf, '1']\n"
    )
    data, _ = _read_yaml(text, "p.yaml")
    assert data["a"] == [
        "yes", "no", "on", "off", "y", "18:12:15", 777, 15, 31, "1_000",
        "2024-01-01", "=", True, False, None, None, 1000.0, float("inf"), "1",
    ]  # fmt: skip
    assert _read_yaml("on: 1\n", "p.yaml")[0] == {"on": 1}  # a key, not True
    # With an anchor, the slow path reads the same scalars.
    assert _read_yaml("a: &x [yes, 18:12:15, 0777]\nb: *x\n", "p.yaml")[0] == {
        "a": ["yes", "18:12:15", 777],
        "b": ["yes", "18:12:15", 777],
    }


@given(st.text(alphabet="0123456789.eE+-xo:/~nulTrFaINfs", max_size=10))
@example("1.2.3.4")
@example("1.")
def test_a_scalar_with_a_slash_colon_or_two_dots_is_text_in_the_core_schema(text):
    """The reader's shortcut (such a scalar is a string) is what the patterns say."""
    from generator.profile_yaml import CORE_SCALARS

    if "/" in text or ":" in text or text.count(".") > 1:
        assert not any(re.match(pattern, text) for _, pattern, _ in CORE_SCALARS)


def test_lists_of_addresses_read_as_any_list_does():
    """A list's plain scalars are read in place (addresses mostly): the same values,
    lines and problems as the item-by-item reading of mappings."""
    from generator.profile import ProfileError, _read_yaml

    text = (
        "a:\n  - 10.0.0.0/8\n  - 2001:db8::/32\n  - 1.5\n  - '1/2'\n  - [x/1, 7]\n"
        "  - {k: 10.1.0.0/16}\n  - 0x1F\n  - fe80::1\n"
    )
    data, lines = _read_yaml(text, "p.yaml")
    assert data["a"] == [
        "10.0.0.0/8", "2001:db8::/32", 1.5, "1/2", ["x/1", 7], {"k": "10.1.0.0/16"},
        31, "fe80::1",
    ]  # fmt: skip
    assert [lines[("a", i)] for i in range(8)] == [2, 3, 4, 5, 6, 7, 8, 9]
    assert lines[("a", 4, 0)] == 6 and lines[("a", 5, "k")] == 7
    with pytest.raises(ProfileError) as exc:
        _read_yaml('a:\n  - 10.0.0.0/8\n  - "10.0.0.1/32\\n"\n', "p.yaml")
    assert exc.value.problems == [
        "p.yaml:3: a[1]: '10.0.0.1/32\\n' holds a control character (a line break?)"
    ]


@pytest.mark.parametrize("label,text,expected", CASES, ids=[c[0] for c in CASES])
def test_bad_input_message(label, text, expected):
    got = problems(text)
    if expected is None:
        assert (
            len(got) == 1
            and got[0].startswith("p.yaml:")
            and "not valid YAML" in got[0]
        )
    else:
        assert got == expected


def test_all_problems_reported_at_once_in_line_order():
    text = GOOD.replace('"4.2"', '"5"').replace("vpn", "vpm")
    got = problems(text)
    assert [g.split(":")[1] for g in got] == ["2", "4"]


def test_warnings_for_risky_choices():
    text = GOOD.replace("external: [172.16.0.0/12]", "external: [0.0.0.0/0]").replace(
        "ssh_rerun: [172.16.0.0/12]",
        "ssh_rerun: [172.16.0.0/12]\n  ssh_admin: [0.0.0.0/0]",
    )
    warnings = parse_profile(text, "p.yaml").warnings
    assert warnings == (
        "peers.ssh_admin: administrative SSH is open to the whole internet; narrow it to your"
        " users' ranges",
        "peers.external: access is vpn but the UI is open to 0.0.0.0/0; narrow it to the VPN's"
        " range",
    )


def test_bare_addresses_become_host_routes():
    profile = parse_profile(
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: [192.0.2.7, 2001:db8::1]")
    )
    assert profile.peers["vcs"] == ("192.0.2.7/32", "2001:db8::1/128")


def test_schema_validates_every_example_profile():
    import json

    import yaml
    from jsonschema import Draft202012Validator

    from conftest import PROFILES
    from generator.profile import load_schema

    schema = load_schema()
    Draft202012Validator.check_schema(schema)
    for path in PROFILES:
        Draft202012Validator(schema).validate(yaml.safe_load(path.read_text()))
    assert json.loads(json.dumps(schema)) == schema


@pytest.mark.parametrize("label,text,expected", CASES, ids=[c[0] for c in CASES])
def test_fast_and_full_schema_validators_agree(label, text, expected):
    import fastjsonschema
    import yaml
    from jsonschema import Draft202012Validator

    from generator.profile import _validation_schema

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        pytest.skip("not YAML: no schema check")
    full = not list(Draft202012Validator(_validation_schema()).iter_errors(data))
    try:
        fastjsonschema.compile(_validation_schema())(data)
        fast = True
    except fastjsonschema.JsonSchemaValueException:
        fast = False
    assert fast == full


# --- plain data only: the YAML reproducers ------------------------------------------

YAML_CASES = [
    (
        "!!int tag",
        GOOD.replace("access: vpn", "access: vpn\nstateful: !!int false"),
        "p.yaml:5: YAML tag '!!int' is not allowed: a profile is plain data; remove the tag",
    ),
    (
        "!!timestamp tag",
        GOOD.replace("name: acme", "name: !!timestamp acme"),
        "p.yaml:1: YAML tag '!!timestamp' is not allowed",
    ),
    ("custom tag", GOOD + "x: !custom x\n", "p.yaml:17: YAML tag '!custom'"),
    (
        "python tag",
        GOOD + "x: !!python/name:os.system\n",
        "p.yaml:17: YAML tag '!!python/name:os.system' is not allowed",
    ),
    ("tag on a list", GOOD + "x: !!seq []\n", "p.yaml:17: YAML tag '!!seq'"),
    (
        "recursive alias",
        GOOD.replace("vcs: [192.0.2.0/24]", "vcs: &a [*a]"),
        "p.yaml:15: alias *a is inside the value it names (a recursive alias)",
    ),
    (
        "deep flow nesting with an anchor",
        GOOD + "x: &deep " + "[" * 800 + "]" * 800 + "\n",
        "p.yaml:17: nested more than 64 levels deep",
    ),
    (
        "deep nesting without tags",
        GOOD + "x: " + "[" * 999 + "]" * 999 + "\n",
        "nested more than 64 levels deep",
    ),
    (
        "alias bomb",
        GOOD
        + "a: &a [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n"
        + "".join(
            f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n"
            for i in range(9)
        ),
        "values once aliases are expanded; not read",
    ),
    (
        "number too long to read",
        GOOD + "ephemeral_ports: [" + "9" * 5000 + ", 2]\n",
        "p.yaml:17: ephemeral_ports[0]: cannot read the value '99999",
    ),
    (
        "key that is a list",
        GOOD + "? [a, b]\n: 1\n",
        "p.yaml:17: top level: a key must be a string, not a list or a mapping",
    ),
    (
        "control character",
        GOOD + "x: a\x07b\n",
        "p.yaml:17: not valid YAML: character #x0007",
    ),
    ("two documents", GOOD + "---\nx: 1\n", "not valid YAML"),
    (
        "a 5 MB key",
        GOOD + "? " + "k" * 5_000_000 + "\n: 1\n",
        "...(5000000 characters); expected one of access,",
    ),
    (
        "merge key of an alias",
        GOOD + "load_balancer: &b {transparent: false}\nvm_service: {<<: *b}\n",
        "p.yaml:17: vm_service.transparent: unknown key 'transparent'",
    ),
    (
        "merge of a scalar",
        GOOD.replace("peers:\n", "peers:\n  <<: [1]\n"),
        "p.yaml:14: peers: '<<' merges a mapping or a list of mappings",
    ),
]


@pytest.mark.parametrize(
    "label,text,expected", YAML_CASES, ids=[c[0] for c in YAML_CASES]
)
def test_yaml_beyond_plain_data_is_refused_with_its_line(label, text, expected):
    got = problems(text)
    assert len(got) == 1 and expected in got[0], got


def test_anchors_aliases_and_merge_keys_are_plain_data():
    text = (
        GOOD.replace(
            "peers:\n  external: [172.16.0.0/12]\n",
            "peers:\n  <<: {vcs: [198.51.100.0/24], external: [10.9.0.0/16]}\n"
            "  external: &corp [172.16.0.0/12]\n",
        )
        .replace("  vcs: [192.0.2.0/24]\n", "")
        .replace("ssh_rerun: [172.16.0.0/12]", "ssh_rerun: *corp")
    )
    profile = parse_profile(text, "p.yaml")
    assert profile.peers["external"] == ("172.16.0.0/12",)  # written keys win
    assert profile.peers["vcs"] == ("198.51.100.0/24",)  # merged
    assert profile.peers["ssh_rerun"] == ("172.16.0.0/12",)  # alias
    # A merged value's problems point at the line it was written on.
    bad = text.replace("vcs: [198.51.100.0/24]", "vcs: [198.51.100.1/24]")
    assert problems(bad)[0].startswith("p.yaml:14: peers.vcs[0]:")


def test_only_regular_files_are_read(tmp_path):
    import os

    from generator.profile import load_profile

    fifo = tmp_path / "fifo.yaml"
    os.mkfifo(fifo)
    for path, message in (
        (fifo, "not a regular file (a FIFO or a device); give a file or '-'"),
        ("/dev/zero", "not a regular file (a FIFO or a device); give a file or '-'"),
        (tmp_path, "is a folder, not a file"),
        (tmp_path / "missing.yaml", "cannot read: No such file or directory"),
    ):
        with pytest.raises(ProfileError) as caught:
            load_profile(path)
        assert caught.value.problems == [f"{path}: {message}"]


def test_size_cap(tmp_path, monkeypatch):
    from generator import problems as module
    from generator.profile import load_profile

    path = tmp_path / "p.yaml"
    path.write_text(GOOD)
    monkeypatch.setattr(module, "MAX_INPUT_BYTES", len(GOOD) - 1)
    monkeypatch.setattr(module.read_text, "__defaults__", (module.MAX_INPUT_BYTES,))
    with pytest.raises(ProfileError, match="larger than"):
        load_profile(path)


def test_dash_reads_standard_input(tmp_path):
    from click.testing import CliRunner

    from generator.cli import main

    result = CliRunner().invoke(main, ["plan", "-", "--format", "json"], input=GOOD)
    assert result.exit_code == 0 and '"profile": "acme"' in result.stdout
    bad = CliRunner().invoke(main, ["plan", "-"], input=GOOD.replace("vpn", "vpm"))
    assert bad.exit_code == 1
    assert bad.stderr.startswith("error: <stdin>:4: access: 'vpm' is not one of")


# --- nomad: servers outside the cluster, the clients' container runtime -------------

EXTERNAL = (GOOD.replace('"4.2"', '"4.8"') + "nomad:\n  servers: external\n").replace(
    "peers:\n", "peers:\n  nomad_server_balancer: [10.0.64.0/24]\n"
)


def test_nomad_servers_outside_the_cluster_and_podman_are_read():
    profile = parse_profile(EXTERNAL, "p.yaml")
    assert profile.nomad_servers == "external"
    assert profile.container_runtime == "docker"
    assert "nomad_servers" in profile.roles()
    assert profile.peers["nomad_server_balancer"] == ("10.0.64.0/24",)
    # The health checks come from the balancer unless said otherwise.
    assert profile.peers["nomad_server_health_checks"] == ("10.0.64.0/24",)
    assert profile.warnings == ()
    plain = parse_profile(GOOD, "p.yaml")
    assert plain.nomad_servers == "in_cluster" and "nomad_servers" not in plain.roles()
    podman = parse_profile(
        GOOD.replace('"4.2"', '"4.10"') + "nomad:\n  container_runtime: podman\n",
        "p.yaml",
    )
    assert podman.container_runtime == "podman"


NOMAD_CASES = [
    (
        "external servers before 4.8",
        EXTERNAL.replace('"4.8"', '"4.7"'),
        [
            "p.yaml:19: nomad.servers: external: Nomad servers outside the cluster come"
            " with 4.8 (CircleCI's Terraform deploy_nomad_server_instances);"
            " server_version is 4.7"
        ],
    ),
    (
        "external servers without their balancer",
        EXTERNAL.replace("  nomad_server_balancer: [10.0.64.0/24]\n", ""),
        [
            "p.yaml:18: peers.nomad_server_balancer: missing: with nomad.servers:"
            " external, list where the servers' balancer is reached (an internal NLB's"
            " subnets, a forwarding rule's address)"
        ],
    ),
    (
        "podman before 4.10",
        GOOD + "nomad:\n  container_runtime: podman\n",
        [
            "p.yaml:18: nomad.container_runtime: podman: CircleCI's Nomad client modules"
            " run Podman from 4.10 (use_podman); server_version is 4.2"
        ],
    ),
    (
        "unknown runtime",
        GOOD + "nomad:\n  container_runtime: containerd\n",
        [
            "p.yaml:18: nomad.container_runtime: 'containerd' is not one of: docker, podman"
        ],
    ),
    (
        "misspelt key",
        GOOD + "nomad:\n  server: external\n",
        ["p.yaml:18: nomad.server: unknown key 'server'; did you mean 'servers'?"],
    ),
    (
        "bad balancer address",
        EXTERNAL.replace("[10.0.64.0/24]", "[10.0.64.1/24]"),
        [
            "p.yaml:14: peers.nomad_server_balancer[0]: '10.0.64.1/24' has host bits set;"
            " did you mean 10.0.64.0/24?"
        ],
    ),
]


@pytest.mark.parametrize(
    "label,text,expected", NOMAD_CASES, ids=[c[0] for c in NOMAD_CASES]
)
def test_nomad_keys_are_validated(label, text, expected):
    assert problems(text) == expected


def test_nomad_server_addresses_are_ignored_with_servers_in_the_cluster():
    text = GOOD.replace("peers:\n", "peers:\n  nomad_server_balancer: [10.0.64.0/24]\n")
    text = text.replace(
        "    load_balancer: [10.0.48.0/24]\n",
        "    load_balancer: [10.0.48.0/24]\n    nomad_servers: [10.0.64.0/24]\n",
    )
    assert parse_profile(text, "p.yaml").warnings == (
        "peers.nomad_server_balancer: ignored: nomad.servers is in_cluster",
        "network.subnets.nomad_servers: ignored: nomad.servers is in_cluster",
    )


def test_gcp_external_servers_need_their_subnets_and_say_where_checks_come_from():
    gcp = GCP.replace("TAG", "nomad").replace('"4.2"', '"4.9"')
    gcp += "nomad:\n  servers: external\n"
    gcp = gcp.replace("peers:\n", "peers:\n  nomad_server_balancer: [10.0.64.5/32]\n")
    (problem,) = problems(gcp)
    assert "network.subnets.nomad_servers: missing: GCP egress rules" in problem
    gcp = gcp.replace(
        "    external_vms: [10.0.32.0/20]\n",
        "    external_vms: [10.0.32.0/20]\n    nomad_servers: [10.0.64.0/24]\n",
    )
    (warning,) = [w for w in parse_profile(gcp, "p.yaml").warnings if "nomad" in w]
    assert warning.startswith("peers.nomad_server_health_checks: empty:")
    assert "35.191.0.0/16, 130.211.0.0/22" in warning
