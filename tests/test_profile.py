"""Every class of bad input gets its exact message, with key path and YAML line."""

from __future__ import annotations

import pytest

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
            "p.yaml:17: owner: unknown key 'owner'; expected one of access, cloud, ephemeral_ports,"
            " gcp, host_firewall, include_obsolete, load_balancer, name, network, peers, quotas, server_version,"
            " stateful,"
            " vm_service"
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
            'p.yaml:2: server_version: expected a quoted string such as "4.2", got the number 4.1'
            " (YAML reads 4.10 as 4.1: quote the version)"
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
        "role with no address on aws",
        GOOD.replace("    nomad_clients: [10.0.16.0/20]\n", ""),
        [
            "p.yaml:7: network.subnets.nomad_clients: missing: on aws, a role is addressed through"
            " its subnets"
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
            "p.yaml:1: name: 'Acme_Prod' is not a valid name: use lowercase letters, digits and"
            " dashes, starting with a letter (at most 32 characters)"
        ],
    ),
    ("not YAML", GOOD.replace("access: vpn", "access: [vpn"), None),
    ("empty", "", ["p.yaml: the profile is empty"]),
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
