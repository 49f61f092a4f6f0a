"""Site flows: the install's own flows, through every stage a page flow goes through."""

from __future__ import annotations

import ipaddress
import json

import pytest
from click.testing import CliRunner
from conftest import ROOT, example, profile_from

from generator.cli import main
from generator.diff import compare, render_text
from generator.emitters import TARGETS
from generator.emitters.aws import _logical_id
from generator.equivalence import check_equivalent
from generator.explain import endpoint, explain
from generator.matrix import ROLES
from generator.optimizer import optimize
from generator.pipeline import files_for, shipped_matrix
from generator.planner import plan
from generator.profile import ProfileError, parse_profile
from generator.verify import make_plan

EXAMPLE = ROOT / "profiles" / "aws-site-flows.yaml"
TEXT = EXAMPLE.read_text()

BASE = """\
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
  ssh_admin: [172.16.10.0/24]
  ssh_rerun: [172.16.0.0/12]
  prometheus: [10.9.0.10/32]
site_flows:
"""

GCP = """\
name: gsite
server_version: "4.8"
cloud: gcp
access: vpn
load_balancer: {transparent: true}
network:
  subnets:
    kubernetes_nodes: [10.0.0.0/20]
    nomad_clients: [10.0.16.0/20]
    external_vms: [10.0.32.0/20]
  dns_servers: [169.254.169.254]
peers:
  external: [172.16.0.0/12]
  vcs: [192.0.2.0/24]
  ssh_rerun: [172.16.0.0/12]
  prometheus: [10.9.0.10/32]
gcp:
  project: site-flows-1
site_flows:
  - id: node-exporter
    from: prometheus
    to: [kubernetes_nodes, nomad_clients, external_vms]
    protocol: tcp
    ports: 9100
    purpose: Prometheus scrapes the node exporter
    reference: https://wiki.example.com/ops/1234
  - id: internal-api
    from: nomad_clients
    to: load_balancer
    protocol: tcp
    ports: 8443
    purpose: Jobs reach an internal API behind the load balancer
"""


def with_flows(flows: str, base: str = BASE) -> str:
    return base + flows


def problems(text: str) -> list[str]:
    with pytest.raises(ProfileError) as caught:
        parse_profile(text, "p.yaml")
    return caught.value.problems


def site_rules(matrix):
    return [r for r in matrix.rules if r.site]


def expected_ends(profile) -> set[tuple]:
    """(role, direction, protocol, port, peer) of both ends of every site flow."""
    out = set()
    for flow in profile.site_flows:
        for src in flow.sources:
            for dst in flow.destinations:
                dst_role = dst
                if dst == "load_balancer" and profile.transparent_lb:
                    dst_role = "kubernetes_nodes"
                for protocol in flow.protocols:
                    for lo, _ in flow.ports:
                        if dst_role in ROLES:
                            out.add((dst_role, "ingress", protocol, lo, src))
                        if src in ROLES:
                            out.add((src, "egress", protocol, lo, dst_role))
    return out


def actual_ends(matrix) -> set[tuple]:
    return {
        (r.role, r.direction, r.protocol, r.ports[0], r.peer.role or r.peer.name)
        for r in site_rules(matrix)
    }


# --- the example: both ends, every target, verify, diff --------------------------


@pytest.mark.parametrize("text", [TEXT, GCP], ids=["aws-example", "gcp"])
def test_every_site_flow_is_planned_on_both_ends(text):
    profile = profile_from(text)
    matrix = shipped_matrix(profile)
    assert actual_ends(matrix) == expected_ends(profile)
    for rule in site_rules(matrix):
        assert "_site_" in rule.name
        assert rule.reference.startswith(f"Site flow {rule.flow}")
        flow = next(f for f in profile.site_flows if f.id == rule.flow)
        assert rule.purpose == flow.purpose
        if flow.reference:
            assert flow.reference in rule.reference
    check_equivalent(plan(profile), matrix)


def test_site_rules_appear_in_every_aws_and_iptables_file():
    profile = example("aws-site-flows")
    matrix = shipped_matrix(profile)
    targets = [TARGETS[n] for n in ("terraform-aws", "cloudformation", "iptables")]
    files = files_for(profile, matrix, targets)
    main_tf = files["terraform-aws/main.tf"]
    template = files["cloudformation/template.yaml"]
    for rule in site_rules(matrix):
        cidr = rule.peer.cidrs[0] if rule.peer.cidrs else None
        key = rule.name if cidr is None else f"{rule.name}_{cidr}"
        assert f'"{key}" = {{' in main_tf
        block = main_tf.split(f'"{key}" = {{')[1].split("}")[0]
        assert "Site flow" in block and rule.purpose in block
        logical = _logical_id(rule, cidr)
        assert "Site" in logical and f"  {logical}:" in template
        assert f"# {rule.name}: {rule.purpose} [{rule.reference}]" in (
            files[f"iptables/{rule.role}.iptables"]
        )
        assert f"rulegen: site {rule.flow}" in files[f"iptables/{rule.role}.iptables"]


def test_site_rules_appear_in_every_gcp_file():
    profile = profile_from(GCP)
    matrix = shipped_matrix(profile)
    targets = [TARGETS["gcp-firewall"], TARGETS["terraform-gcp"]]
    files = files_for(profile, matrix, targets)
    bodies = json.loads(files["gcp-firewall/firewalls.json"])
    site = [b for b in bodies if "-site-" in b["name"]]
    # One GCP rule per site rule (no rule here has more than 256 ranges).
    assert len(site) == len(site_rules(matrix))
    for body in site:
        assert body["description"].split(". Source: ")[1].startswith("Site flow")
        assert f'"{body["name"]}"' in files["terraform-gcp/main.tf"]
        assert body["name"] in files["gcp-firewall/create-firewall-rules.sh"]
    from jsonschema import Draft202012Validator

    schema = json.loads(
        (ROOT / "tests" / "data" / "gcp-firewall.schema.json").read_text()
    )
    validator = Draft202012Validator(schema)
    for body in bodies:
        assert not [e.message for e in validator.iter_errors(body)], body["name"]
    moved = [b for b in site if "8443" in b["name"] and b["direction"] == "INGRESS"]
    assert moved and "transparent load balancer" in moved[0]["description"]


def test_no_checkov_skip_excuses_a_site_flow_open_to_anywhere():
    profile = profile_from(
        with_flows(
            """\
  - from: external
    to: nomad_clients
    protocol: tcp
    ports: 22
    purpose: Vendor support logs in
""",
            BASE.replace("external: [172.16.0.0/12]", "external: [0.0.0.0/0]"),
        )
    )
    matrix = shipped_matrix(profile)
    files = files_for(profile, matrix, [TARGETS["terraform-aws"]])
    block = files["terraform-aws/main.tf"].split(
        '"nomad_clients_ingress_tcp_22_site_external_0.0.0.0/0" = {'
    )[1]
    assert "checkov:skip" not in block.split("\n  }")[0]
    assert any("opens SSH (tcp/22) on Nomad clients" in w for w in matrix.warnings)


def test_verify_probes_every_site_rule_and_the_site_sources():
    profile = example("aws-site-flows")
    matrix = shipped_matrix(profile)
    probe_plan = make_plan(matrix, profile.subnets)
    connects = [p for p in probe_plan.probes if p.expect]
    for rule in site_rules(matrix):
        assert any(
            f"flow {rule.flow} ({rule.name}" in why for p in connects for why in p.why
        ), rule.name
    names = {label for h in probe_plan.hosts for label in h.labels}
    assert {"prometheus", "log_collector", "bastion", "package_mirror"} <= names
    # The bastion may reach SSH, and nothing else the roles serve.
    bastion = [p for p in probe_plan.probes if "bastion" in p.src.labels]
    assert {(p.dst.role, p.port) for p in bastion if p.expect} == {
        ("kubernetes_nodes", 22),
        ("nomad_clients", 22),
    }
    assert any(not p.expect and p.port == 9100 for p in bastion)
    assert all(
        why == "site flow source, not published"
        for p in bastion
        if not p.expect
        for why in p.why
    )


def test_editing_a_site_flow_is_a_site_change_in_diff():
    old = shipped_matrix(example("aws-site-flows"))
    edited = TEXT.replace("ports: 9100", "ports: [9100, 9256]").replace(
        "log_collector: [10.20.0.20/32]", "log_collector: [10.20.0.21/32]"
    )
    new = shipped_matrix(profile_from(edited))
    diff = compare(old, new)
    assert diff.changes and all(c.site for c in diff.changes)
    kinds = {(c.kind, c.role, c.direction) for c in diff.changes}
    assert ("added", "nomad_clients", "ingress") in kinds
    assert ("removed", "nomad_clients", "egress") in kinds
    assert ("added", "nomad_clients", "egress") in kinds
    added_9256 = [
        c
        for c in diff.changes
        if c.kind == "added" and any(p.ports == (9256, 9256) for p in c.traffic)
    ]
    assert {c.role for c in added_9256} == {
        "kubernetes_nodes",
        "nomad_clients",
        "external_vms",
    }
    assert all(c.flows == ["node-exporter"] for c in added_9256)
    # Both files of the diff command, as a person and a tool read them.
    from generator.diff import Report, Side, FileDiff

    report = Report(
        Side("old", "profile", old, {}),
        Side("new", "profile", new, {}),
        diff,
        FileDiff(),
    )
    text = render_text(report)
    assert "site flow changes" in text and "[site]" in text
    assert all(c.to_dict()["site"] for c in diff.changes)


def test_diff_command_reports_site_changes(tmp_path):
    edited = tmp_path / "edited.yaml"
    edited.write_text(TEXT.replace("ports: 9100", "ports: 9101"))
    result = CliRunner().invoke(
        main, ["diff", str(EXAMPLE), str(edited), "--format", "markdown"]
    )
    assert result.exit_code == 2, result.output
    assert "**removed** (breaking) (site)" in result.output
    assert "| added (site) |" in result.output


def test_explain_takes_a_peer_list_name():
    profile = example("aws-site-flows")
    matrix = shipped_matrix(profile)
    peers = dict(profile.peers)
    yes = explain(
        matrix,
        endpoint("prometheus", peers),
        endpoint("external_vms"),
        9100,
        "tcp",
        profile.subnets,
    )
    assert yes.allowed and yes.flows == ["node-exporter"]
    no = explain(
        matrix,
        endpoint("bastion", peers),
        endpoint("external_vms"),
        22,
        "tcp",
        profile.subnets,
    )
    assert not no.allowed
    result = CliRunner().invoke(
        main,
        ["explain", str(EXAMPLE), "--from", "nomad_clients", "--to", "log_collector"]
        + ["--port", "24224"],
    )
    assert result.exit_code == 0 and "allowed" in result.output
    assert "Site flow log-shipping" in result.output


# --- page rules stay as they are ------------------------------------------------


def test_site_flows_never_rename_or_thin_page_rules():
    page_only = shipped_matrix(profile_from(BASE.replace("site_flows:\n", "")))
    # Adjacent ports and overlapping addresses: what the optimizer would merge.
    profile = profile_from(
        with_flows(
            """\
  - from: ssh_admin
    to: [nomad_clients, external_vms]
    protocol: tcp
    ports: "23-24"
    purpose: Telnet console, adjacent to SSH
  - from: [nomad_clients, kubernetes_nodes]
    to: internet
    protocol: tcp
    ports: [444, 8080]
    purpose: Egress next to 443
  - from: wide
    to: nomad_clients
    protocol: tcp
    ports: "1-100"
    purpose: A wide range over the page's ports, from a block over ssh_admin
""",
            BASE.replace(
                "  prometheus: [10.9.0.10/32]\n",
                "  prometheus: [10.9.0.10/32]\n  wide: [172.16.0.0/16]\n",
            ),
        )
    )
    matrix = shipped_matrix(profile)
    page = [r for r in matrix.rules if not r.site]
    assert page == list(page_only.rules)
    # 2 + 4 + 1 site rules, less ssh_admin's 23-24 to the Nomad clients, which the
    # wide flow covers (a site rule may shadow a site rule).
    assert len(site_rules(matrix)) == 6
    assert not any(
        r.role == "nomad_clients" and r.peer.name == "ssh_admin"
        for r in site_rules(matrix)
    )
    check_equivalent(plan(profile), matrix)


def test_a_site_flow_the_page_requires_is_a_warning_naming_the_page_flow():
    profile = profile_from(with_flows("""\
  - id: admin
    from: ssh_admin
    to: [nomad_clients, kubernetes_nodes]
    protocol: tcp
    ports: 22
    purpose: Admins log in
  - from: nomad_clients
    to: load_balancer
    protocol: tcp
    ports: 4647
    purpose: Nomad RPC, again
"""))
    matrix = plan(profile)
    assert site_rules(matrix) == []
    assert (
        "site_flows[0] (admin): the page already requires nomad_clients ingress tcp/22"
        " from ssh_admin (page flow admin-ssh: Administrative SSH to the instances);"
        " the site flow adds no rule for it"
    ) in matrix.warnings
    assert any(
        w.startswith("site_flows[1]: the page already requires nomad_clients egress")
        and "page flow nomad-rpc-lb" in w
        for w in matrix.warnings
    )


def test_stateless_site_flows_get_their_return_rules():
    profile = profile_from(
        with_flows(
            """\
  - from: prometheus
    to: nomad_clients
    protocol: tcp
    ports: 9100
    purpose: Scrape
""",
            BASE.replace("access: vpn", "access: vpn\nstateful: false"),
        )
    )
    rules = [r for r in plan(profile).rules if r.site]
    assert {(r.direction, r.is_return) for r in rules} == {
        ("ingress", False),
        ("egress", True),
    }
    back = next(r for r in rules if r.is_return)
    assert back.source_ports == (9100, 9100) and "_site_" in back.name


# --- isolation -------------------------------------------------------------------

NOMAD_TO_NOMAD = """\
  - id: cache-peers
    from: nomad_clients
    to: nomad_clients
    protocol: tcp
    ports: 7946
    purpose: A build cache shared between the clients
"""


def test_a_flow_between_isolated_roles_is_refused_with_the_reason():
    assert problems(with_flows(NOMAD_TO_NOMAD)) == [
        "p.yaml:22: site_flows[0].to: Nomad clients to Nomad clients is refused: the"
        " page says Nomad clients need no traffic between them and asks to block it"
        " completely (jobs of different projects run side by side on them); add"
        " acknowledge_isolation: true to open it anyway"
    ]


def test_an_acknowledged_isolated_flow_is_planned_and_probed():
    profile = profile_from(
        with_flows(NOMAD_TO_NOMAD + "    acknowledge_isolation: true\n")
    )
    matrix = shipped_matrix(profile)
    assert actual_ends(matrix) == {
        ("nomad_clients", "ingress", "tcp", 7946, "nomad_clients"),
        ("nomad_clients", "egress", "tcp", 7946, "nomad_clients"),
    }
    assert any("acknowledge_isolation" in n for n in matrix.notes)
    probes = make_plan(matrix, profile.subnets).probes
    between = [
        p
        for p in probes
        if p.src.role == p.dst.role == "nomad_clients" and p.src is not p.dst
    ]
    assert {p.port for p in between if p.expect} == {7946}
    assert {p.port for p in between if not p.expect} >= {4647, 22}


def test_acknowledging_nothing_is_an_error():
    text = with_flows("""\
  - from: prometheus
    to: nomad_clients
    protocol: tcp
    ports: 9100
    purpose: Scrape
    acknowledge_isolation: true
""")
    assert problems(text) == [
        "p.yaml:25: site_flows[0].acknowledge_isolation: nothing to acknowledge: the"
        " flow joins no role the page isolates"
    ]


# --- bad input: file:line and key path ---------------------------------------------

FLOW = """\
  - from: prometheus
    to: nomad_clients
    protocol: tcp
    ports: 9100
    purpose: Scrape
"""

BAD = [
    (
        "unknown peer",
        FLOW.replace("from: prometheus", "from: prometeus"),
        [
            "p.yaml:20: site_flows[0].from: unknown end 'prometeus': not a role or a"
            " peer list; did you mean 'prometheus'?"
        ],
    ),
    (
        "unknown role in a list",
        FLOW.replace("to: nomad_clients", "to: [nomad_clients, nomad_client]"),
        [
            "p.yaml:21: site_flows[0].to[1]: unknown end 'nomad_client': not a role or a"
            " peer list; did you mean 'nomad_clients'?"
        ],
    ),
    (
        "port out of range",
        FLOW.replace("ports: 9100", "ports: [9100, 70000]"),
        ["p.yaml:23: site_flows[0].ports[1]: port 70000 is out of range 1-65535"],
    ),
    (
        "backwards range",
        FLOW.replace("ports: 9100", 'ports: "9200-9100"'),
        ["p.yaml:23: site_flows[0].ports: range 9200-9100 runs backwards"],
    ),
    (
        "not a port",
        FLOW.replace("ports: 9100", "ports: [http]"),
        [
            "p.yaml:23: site_flows[0].ports[0]: 'http' is not a port: expected a number,"
            " a range such as 30000-32767 or [30000, 32767]"
        ],
    ),
    (
        "missing ports",
        FLOW.replace("    ports: 9100\n", ""),
        [
            "p.yaml:20: site_flows[0].ports: ports go with tcp/udp: list them (or use"
            " protocol all)"
        ],
    ),
    (
        "ports with protocol all",
        FLOW.replace("protocol: tcp", "protocol: all"),
        [
            "p.yaml:23: site_flows[0].ports: protocol all matches every port: leave"
            " ports out"
        ],
    ),
    (
        "unknown protocol",
        FLOW.replace("protocol: tcp", "protocol: tpc"),
        [
            "p.yaml:22: site_flows[0].protocol: unknown protocol 'tpc'; expected tcp,"
            " udp or all; did you mean 'tcp'?"
        ],
    ),
    (
        "missing purpose",
        FLOW.replace("    purpose: Scrape\n", ""),
        ["p.yaml:20: site_flows[0]: missing required key 'purpose'"],
    ),
    (
        "empty purpose",
        FLOW.replace("purpose: Scrape", 'purpose: ""'),
        ["p.yaml:24: site_flows[0].purpose: must not be empty"],
    ),
    (
        "unknown key",
        FLOW.replace("purpose: Scrape", "purpose: Scrape\n    refrence: OPS-1"),
        [
            "p.yaml:25: site_flows[0].refrence: unknown key 'refrence'; did you mean"
            " 'reference'?"
        ],
    ),
    (
        "no role at either end",
        FLOW.replace("to: nomad_clients", "to: internet"),
        [
            "p.yaml:21: site_flows[0].to: prometheus to internet: neither end is a role;"
            " a site flow opens a role's firewall, so one end at least must be a role"
        ],
    ),
    (
        "a page flow's id",
        "  - id: dns\n" + FLOW.replace("  - from", "    from"),
        ["p.yaml:20: site_flows[0].id: 'dns' is a page flow's id; choose another"],
    ),
    (
        "duplicate id",
        ("  - id: scrape\n" + FLOW.replace("  - from", "    from")) * 2,
        ["p.yaml:26: site_flows[1].id: 'scrape' is already the id of site_flows[0]"],
    ),
]


@pytest.mark.parametrize("label,flows,expected", BAD, ids=[b[0] for b in BAD])
def test_bad_site_flow_message(label, flows, expected):
    assert problems(with_flows(flows)) == expected


def test_bad_named_peer_lists():
    text = BASE.replace(
        "  prometheus: [10.9.0.10/32]\n",
        "  prometheus: [10.9.0.10/30]\n  ssh_admn: [10.1.0.0/24]\n"
        "  nomad_clients: [10.2.0.0/24]\n  Monitoring: [10.3.0.0/24]\n",
    )
    assert problems(with_flows(FLOW, text)) == [
        "p.yaml:21: peers.Monitoring: 'Monitoring' is not a valid peer list name: use"
        " lowercase letters, digits and underscores, starting with a letter (at most 31"
        " characters)",
    ]
    text = text.replace("  Monitoring: [10.3.0.0/24]\n", "")
    assert problems(with_flows(FLOW, text)) == [
        "p.yaml:18: peers.prometheus[0]: '10.9.0.10/30' has host bits set; did you mean"
        " 10.9.0.8/30?",
        "p.yaml:20: peers.nomad_clients: 'nomad_clients' already names a role; choose"
        " another name",
    ]
    text = text.replace("10.9.0.10/30", "10.9.0.8/30").replace(
        "  nomad_clients: [10.2.0.0/24]\n", ""
    )
    assert problems(with_flows(FLOW, text)) == [
        "p.yaml:19: peers.ssh_admn: unknown key 'ssh_admn'; did you mean 'ssh_admin'?"
        " (no site flow uses it as a named peer list)"
    ]


def test_an_unused_peer_list_is_a_warning():
    profile = profile_from(BASE.replace("site_flows:\n", ""))
    assert profile.warnings == (
        "peers.prometheus: a named peer list that no site flow uses",
    )


def test_open_to_anywhere_warnings():
    text = with_flows(
        """\
  - from: anyone
    to: external_vms
    protocol: tcp
    ports: "20-30"
    purpose: Vendor access
  - from: kubernetes_nodes
    to: anyone
    protocol: all
    purpose: Everything out
""",
        BASE.replace("  prometheus: [10.9.0.10/32]\n", "  anyone: [0.0.0.0/0]\n"),
    )
    assert profile_from(text).warnings == (
        "site_flows[0]: opens SSH (tcp/22) on External VMs to the whole internet"
        " (peers.anyone); narrow it to your users' ranges",
        "site_flows[1]: opens every port of Kubernetes nodes to 0.0.0.0/0"
        " (peers.anyone); narrow the peer list or the ports",
    )


def test_ports_in_every_shape():
    profile = profile_from(
        with_flows(
            FLOW.replace("ports: 9100", 'ports: [9100, "9200-9210", [9300, 9301]]')
        )
    )
    assert profile.site_flows[0].ports == ((9100, 9100), (9200, 9210), (9300, 9301))


# --- schema and starter --------------------------------------------------------------


def test_schema_describes_site_flows_and_peer_lists():
    schema = json.loads(CliRunner().invoke(main, ["schema"]).output)
    flow = schema["$defs"]["site_flow"]
    assert set(flow["required"]) == {"from", "to", "protocol", "purpose"}
    assert {"reference", "ports", "acknowledge_isolation"} <= set(flow["properties"])
    assert schema["properties"]["peers"]["additionalProperties"] == {
        "description": schema["properties"]["peers"]["additionalProperties"][
            "description"
        ],
        "$ref": "#/$defs/cidr_list",
    }


def test_the_starters_commented_example_is_valid(tmp_path):
    target = tmp_path / "new.yaml"
    assert CliRunner().invoke(main, ["init", "-o", str(target)]).exit_code == 0
    text = target.read_text()
    assert "site_flows: []" in text
    lines = []
    in_flows = False  # the commented lines right under site_flows, and no others
    for line in text.replace("site_flows: []", "site_flows:").splitlines():
        in_flows = line == "site_flows:" or (in_flows and line.startswith("#  "))
        if in_flows and line.startswith("#  "):
            line = line[1:]
        elif line.startswith("  # prometheus:"):
            line = "  prometheus:" + line.split("prometheus:")[1]
        lines.append(line)
    profile = parse_profile("\n".join(lines) + "\n", "new.yaml")
    matrix = plan(profile)
    assert {r.role for r in site_rules(matrix)} == {
        "kubernetes_nodes",
        "nomad_clients",
        "external_vms",
    }


def test_readme_site_flows_example_is_valid():
    import re

    import yaml

    readme = (ROOT / "README.md").read_text()
    reference = yaml.safe_load(
        re.search(r"```yaml\n(.*?)```", readme.split("## Profile reference")[1], re.S)[
            1
        ]
    )
    reference.pop("gcp")
    snippet = yaml.safe_load(
        re.search(r"```yaml\n(.*?)```", readme.split("### Site flows")[1], re.S)[1]
    )
    reference["peers"].update(snippet["peers"])
    reference["site_flows"] = snippet["site_flows"]
    profile = profile_from(yaml.safe_dump(reference))
    matrix = shipped_matrix(profile)
    assert actual_ends(matrix) == expected_ends(profile) != set()
    assert "nomad_clients_ingress_tcp_9100_site_prometheus" in readme
    assert "nomad_clients_ingress_tcp_9100_site_prometheus" in {
        r.name for r in matrix.rules
    }


def test_site_rules_count_towards_quotas_and_split_like_the_others():
    from test_emit_aws import terraform_rules

    from generator.quotas import QuotaError

    scrapers = ", ".join(f"10.9.1.{i}/32" for i in range(0, 16, 2))  # 8 blocks
    quotas = "quotas: {aws: {inbound_rules_per_group: 6}}\n"
    base = BASE.replace("prometheus: [10.9.0.10/32]", f"prometheus: [{scrapers}]")
    text = with_flows(FLOW, base.replace("site_flows:\n", quotas + "site_flows:\n"))
    profile = profile_from(text)
    matrix = shipped_matrix(profile)
    files = files_for(profile, matrix, [TARGETS["terraform-aws"]])
    rules = terraform_rules(files["terraform-aws/main.tf"])
    site = [r for r in rules if "_site_prometheus_" in r["key"]]
    assert len(site) == 8 and {r["role"] for r in site} == {"nomad_clients"}
    groups = {r["group"] for r in rules if r["role"] == "nomad_clients"}
    assert len(groups) > 1  # 3 page rules + 8 site rules, 6 to a group
    tight = text.replace(
        "inbound_rules_per_group: 6",
        "inbound_rules_per_group: 2, groups_per_interface: 2",
    )
    profile = profile_from(tight)
    with pytest.raises(QuotaError):
        files_for(profile, shipped_matrix(profile), [TARGETS["terraform-aws"]])


def test_a_snapshot_keeps_site_rules_and_diffs_against_an_edit(tmp_path):
    from generator import snapshot

    side = snapshot.side_from_profile(str(EXAMPLE))
    text = snapshot.dumps(snapshot.build(side))
    back = snapshot.parse_snapshot(text, "s.json")  # validated by its schema
    assert [r for r in back.matrix.rules if r.site] == site_rules(side.matrix) != []
    saved = tmp_path / "s.json"
    saved.write_text(text)
    edited = tmp_path / "edited.yaml"
    edited.write_text(
        TEXT.replace("bastion: [10.20.0.5/32]", "bastion: [10.20.0.6/32]")
    )
    result = CliRunner().invoke(main, ["diff", str(saved), str(edited)])
    assert result.exit_code == 2, result.output
    assert "4 changes, 2 breaking" in result.output
    assert "4 of them site flow changes" in result.output


def test_a_named_peer_open_to_anywhere_gets_the_stand_in_host():
    text = with_flows(
        """\
  - from: anyone
    to: nomad_clients
    protocol: tcp
    ports: 8080
    purpose: A public webhook receiver
  - from: partner_v6
    to: nomad_clients
    protocol: tcp
    ports: 8081
    purpose: A partner over IPv6 only
""",
        BASE.replace(
            "  prometheus: [10.9.0.10/32]\n",
            "  anyone: [0.0.0.0/0]\n  partner_v6: [2001:db8::/32]\n",
        ),
    )
    profile = profile_from(text)
    probe_plan = make_plan(shipped_matrix(profile), profile.subnets)
    host = next(h for h in probe_plan.hosts if "anyone" in h.labels)
    assert host.stand_in and host.address in ipaddress.ip_network("198.18.0.0/15")
    assert any(p.src is host and p.port == 8080 and p.expect for p in probe_plan.probes)
    assert any(
        p.src is host and p.port == 22 and not p.expect for p in probe_plan.probes
    )
    assert probe_plan.skipped == [
        "nomad_clients_ingress_tcp_8081_site_partner_v6: no IPv4 address in its peer;"
        " not probed"
    ]
