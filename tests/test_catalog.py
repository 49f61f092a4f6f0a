"""Every row of the page, per release line, against the planner's matrix.

The expected rows below are transcribed from the reference notes
(shared/reference/server-versions.md), independently of generator/catalog.yaml.
"""

from __future__ import annotations

import json

import pytest

from generator.catalog import load_catalog, parse_catalog
from generator.planner import plan

from conftest import profile_from

ABBR = {
    "LB": "load_balancer",
    "K8S": "kubernetes_nodes",
    "NOMAD": "nomad_clients",
    "VM": "external_vms",
}

# The rows of each release line's page as written (role dir proto ports peer), both
# ends of each flow where the page prints both. "All compute" rows are written out per
# role. "external" of the re-run rows is peers.ssh_rerun; of the UI rows, external.
# Row 11 ("SSH is also used to talk to the VMs ... at least to the VM subnet") names
# no role: the compute's SSH egress to the VMs is printed only where a table lists it.
COMMON = """
K8S in tcp 22 ssh_admin
NOMAD in tcp 22 ssh_admin
VM in tcp 22 ssh_admin
K8S out udp 53 dns
K8S out tcp 53 dns
NOMAD out udp 53 dns
NOMAD out tcp 53 dns
VM out udp 53 dns
VM out tcp 53 dns
K8S out tcp 80 internet
K8S out tcp 443 internet
NOMAD out tcp 80 internet
NOMAD out tcp 443 internet
VM out tcp 80 internet
VM out tcp 443 internet
K8S out tcp 22 vcs
NOMAD out tcp 22 vcs
VM out tcp 22 vcs
"""

# 3.x: a load balancer per service, the VMs' re-run range is the Nomad clients' one,
# and the Nomad clients' egress table has no SSH to the VMs.
PAGE_3 = COMMON + """
LB in tcp 80 external
LB in tcp 443 external
LB in tcp 3000 NOMAD
LB in tcp 4647 NOMAD
LB in tcp 8585 NOMAD
LB out tcp 30000-32767 K8S
K8S in tcp 30000-32767 LB
K8S in all - K8S
K8S out all - K8S
K8S out tcp 2376 VM
K8S out tcp 4647 NOMAD
NOMAD in tcp 4647 K8S
NOMAD in tcp 64535-65535 ssh_rerun
NOMAD out tcp 2376 VM
NOMAD out tcp 3000 LB
NOMAD out tcp 4647 LB
NOMAD out tcp 8585 LB
VM in tcp 22 K8S
VM in tcp 22 NOMAD
VM in tcp 2376 K8S
VM in tcp 2376 NOMAD
VM in tcp 64535-65535 ssh_rerun
"""

# 4.0-4.2 (the seed page).
PAGE_4_0 = COMMON + """
LB in tcp 80 external
LB in tcp 443 external
LB in tcp 3000 NOMAD
LB in tcp 4647 NOMAD
LB in tcp 8585 NOMAD
LB out tcp 30000-32767 K8S
K8S in tcp 30000-32767 LB
K8S in all - K8S
K8S out all - K8S
K8S out tcp 2376 VM
K8S out tcp 4647 NOMAD
NOMAD in tcp 4647 K8S
NOMAD in tcp 64535-65535 ssh_rerun
NOMAD out tcp 22 VM
NOMAD out tcp 2376 VM
NOMAD out tcp 3000 LB
NOMAD out tcp 4647 LB
NOMAD out tcp 8585 LB
VM in tcp 22 K8S
VM in tcp 22 NOMAD
VM in tcp 2376 K8S
VM in tcp 2376 NOMAD
VM in tcp 54782 ssh_rerun
"""

# 4.3-4.10: the egress tables lost K8S -> VM 2376 and NOMAD -> VM 2376 and NOMAD ->
# LB 3000/8585 (and the AWS section its 22 and 2376 rows); the ingress tables still
# print LB 3000/8585 from NOMAD, VM 2376 from K8S and NOMAD, VM 22 from K8S.
PAGE_4_3 = COMMON + """
LB in tcp 80 external
LB in tcp 443 external
LB in tcp 3000 NOMAD
LB in tcp 4647 NOMAD
LB in tcp 8585 NOMAD
LB out tcp 30000-32767 K8S
K8S in tcp 30000-32767 LB
K8S in all - K8S
K8S out all - K8S
K8S out tcp 4647 NOMAD
NOMAD in tcp 4647 K8S
NOMAD in tcp 64535-65535 ssh_rerun
NOMAD out tcp 22 VM
NOMAD out tcp 4647 LB
VM in tcp 22 K8S
VM in tcp 22 NOMAD
VM in tcp 2376 K8S
VM in tcp 2376 NOMAD
VM in tcp 54782 ssh_rerun
"""

PAGES = {"3.x": PAGE_3, "4.0-4.2": PAGE_4_0, "4.3-4.10": PAGE_4_3}

# Rows the catalog adds to a page, each with the flow whose matrix note says why.
ADDED = {
    "3.x": {"K8S out tcp 22 VM": "k8s-vm-ssh", "NOMAD out tcp 22 VM": "nomad-vm-ssh"},
    "4.0-4.2": {"K8S out tcp 22 VM": "k8s-vm-ssh"},
    "4.3-4.10": {},
}
# Rows a page prints that the catalog leaves out (include_obsolete: false), each with
# the flow whose note names the egress table that drops its other end.
DROPPED = {
    "3.x": {},
    "4.0-4.2": {},
    "4.3-4.10": {
        "LB in tcp 3000 NOMAD": "vm-service",
        "LB in tcp 8585 NOMAD": "output-processor",
        "VM in tcp 22 K8S": "k8s-vm-ssh",
        "VM in tcp 2376 K8S": "k8s-vm-docker",
        "VM in tcp 2376 NOMAD": "nomad-vm-docker",
    },
}
STALE_4_3 = """
LB in tcp 3000 NOMAD
LB in tcp 8585 NOMAD
NOMAD out tcp 3000 LB
NOMAD out tcp 8585 LB
K8S out tcp 2376 VM
K8S out tcp 22 VM
NOMAD out tcp 2376 VM
VM in tcp 22 K8S
VM in tcp 2376 K8S
VM in tcp 2376 NOMAD
"""
STILL_REQUIRED_4_3 = """
NOMAD out tcp 22 VM
VM in tcp 22 NOMAD
"""


def rows(text: str) -> set[tuple]:
    out = set()
    for line in text.strip().splitlines():
        if not line.strip():
            continue
        role, direction, proto, ports, peer = line.split()
        lo, _, hi = ports.partition("-")
        span = None if ports == "-" else (int(lo), int(hi or lo))
        out.add(
            (
                ABBR[role],
                "ingress" if direction == "in" else "egress",
                proto,
                span,
                ABBR.get(peer, peer),
            )
        )
    return out


def facts(matrix) -> set[tuple]:
    return {
        (r.role, r.direction, r.protocol, r.ports, r.peer.role or r.peer.name)
        for r in matrix.rules
    }


FULL = """
name: full
server_version: "{version}"
cloud: aws
access: vpn
include_obsolete: {obsolete}
network:
  subnets:
    kubernetes_nodes: [10.0.0.0/20]
    nomad_clients: [10.0.16.0/20]
    external_vms: [10.0.32.0/20]
    load_balancer: [10.0.48.0/24]
  dns_servers: [10.0.0.2]
peers:
  vcs: [192.0.2.0/24]
  ssh_admin: [198.51.100.0/24]
  ssh_rerun: [203.0.113.0/24]
"""


def full_matrix(version: str, obsolete: bool = False):
    return plan(
        profile_from(FULL.format(version=version, obsolete=str(obsolete).lower()))
    )


def rule_flows(matrix) -> dict[tuple, set[str]]:
    out: dict[tuple, set[str]] = {}
    for r in matrix.rules:
        key = (r.role, r.direction, r.protocol, r.ports, r.peer.role or r.peer.name)
        out.setdefault(key, set()).update(r.flow.split("+"))
    return out


LINE_VERSIONS = [
    (line, version)
    for line, versions in (
        ("3.x", ["3"]),
        ("4.0-4.2", ["4.0", "4.1", "4.2"]),
        ("4.3-4.10", ["4.3", "4.4", "4.5", "4.6", "4.7", "4.8", "4.9", "4.10"]),
    )
    for version in versions
]


@pytest.mark.parametrize("line,version", LINE_VERSIONS)
def test_every_row_of_the_page_or_a_note_saying_why(line, version):
    page = rows(PAGES[line])
    matrix = full_matrix(version)
    assert matrix.release_line == line
    got = rule_flows(matrix)
    added, dropped = set(got) - page, page - set(got)
    assert added == rows("\n".join(ADDED[line])), "rows the page does not print"
    assert dropped == rows("\n".join(DROPPED[line])), "rows the page prints"
    for row, flow in ADDED[line].items():
        assert got[next(iter(rows(row)))] == {flow}, row
        # The note is the flow's reading of the page, not an obsolete flow's.
        assert any(
            n.startswith(f"{flow}: ") and ": left out," not in n for n in matrix.notes
        ), (row, flow)
    for row, flow in DROPPED[line].items():
        (note,) = [n for n in matrix.notes if n.startswith(f"{flow}: left out,")]
        assert f"egress tables drop it ({line_table(flow, line)})" in note


def line_table(flow_id: str, line: str) -> str:
    flow = next(f for f in load_catalog().flows if f.id == flow_id)
    table = flow.dropped_by(line)
    # Each names one of the page's egress tables, and what that table still lists.
    assert table.split(":")[0] in (
        "Nomad clients > Egress",
        "Kubernetes nodes > Egress",
    )
    return table


@pytest.mark.parametrize("version", ["3", "4.2", "4.3", "4.10"])
def test_no_traffic_between_two_nomad_clients_or_two_vms(version):
    # Rows 23 and 29: block it completely.
    for role in ("nomad_clients", "external_vms"):
        for direction in ("ingress", "egress"):
            assert not any(
                r.peer.role == role
                for r in full_matrix(version, True).for_role(role, direction)
            )


@pytest.mark.parametrize("version", ["4.3", "4.10"])
def test_stale_rows_kept_on_request_and_marked(version):
    matrix = full_matrix(version, obsolete=True)
    # Both ends of every stale flow: the 4.0 page's rows and the SSH its rows imply.
    assert facts(matrix) == rows(PAGE_4_0) | rows("\n".join(ADDED["4.0-4.2"]))
    marked = [r for r in matrix.rules if r.obsolete]
    assert facts(type(matrix)(**{**matrix.__dict__, "rules": marked})) == rows(
        STALE_4_3
    )


def test_stale_rows_dropped_are_named_in_notes():
    notes = " ".join(full_matrix("4.3").notes)
    for flow in ("vm-service", "output-processor", "k8s-vm-docker", "nomad-vm-docker"):
        assert flow in notes


@pytest.mark.parametrize("version", ["4.3", "4.10"])
def test_nomad_clients_keep_ssh_to_the_vms_on_4_3_and_say_why(version):
    matrix = full_matrix(version)
    assert rows(STILL_REQUIRED_4_3) <= facts(matrix)
    assert not any(r.obsolete for r in matrix.rules)
    (note,) = [n for n in matrix.notes if n.startswith("nomad-vm-ssh:")]
    assert "Nomad clients > Egress: 22 to the VMs" in note and "remote Docker" in note
    assert not any("nomad-vm-ssh: left out" in n for n in matrix.notes)


@pytest.mark.parametrize("version", ["3", "4.2", "4.3", "4.10"])
def test_the_nodes_reach_the_vcs_on_every_line_and_the_reading_is_recorded(version):
    # "SSH for all instances with the VM subnet and your VCS as the destination": the
    # nodes reach the VCS on every line, and the VMs where the vm-service pod exists.
    matrix = full_matrix(version)
    nodes_ssh = {
        r.peer.role or r.peer.name
        for r in matrix.for_role("kubernetes_nodes", "egress")
        if r.ports == (22, 22)
    }
    assert nodes_ssh == {"vcs"} | (
        {"external_vms"} if version in ("3", "4.2") else set()
    )
    (note,) = [n for n in matrix.notes if n.startswith("vcs-ssh:")]
    assert "the Kubernetes nodes get SSH to the VCS too" in note
    assert '"for all instances"' in note and "GitHub Enterprise" in note
    assert ("k8s-vm-ssh: the Kubernetes" in " ".join(matrix.notes)) == (
        version in ("3", "4.2")
    )


@pytest.mark.parametrize(
    "version,ports",
    [("3", (64535, 65535)), ("4.0", (54782, 54782)), ("4.10", (54782, 54782))],
)
def test_the_vms_re_run_port_follows_the_line(version, ports):
    (rule,) = [
        r
        for r in full_matrix(version).for_role("external_vms", "ingress")
        if r.peer.name == "ssh_rerun"
    ]
    assert rule.ports == ports
    # No AWS section on the 3.x page: the rule cites the VMs' ingress table only.
    assert rule.reference.endswith("External VMs > Ingress") == (version == "3")


def test_mtls_caution_from_4_4_only():
    assert not any("mTLS" in n for n in full_matrix("4.3").notes)
    assert any("mTLS" in n for n in full_matrix("4.4").notes)
    assert any("mTLS" in n for n in full_matrix("4.10").notes)


def test_3x_names_its_four_load_balancers():
    purposes = {
        r.purpose for r in full_matrix("3").for_role("load_balancer", "ingress")
    }
    assert any("traefik" in p for p in purposes)
    assert any("output-processor" in p for p in purposes)
    assert not any("traefik" in r.purpose for r in full_matrix("4.0").rules)


def test_every_rule_cites_its_release_page():
    for version, title in (("3", "3.x"), ("4.2", "4.0-4.2"), ("4.10", "4.3-4.10")):
        for rule in full_matrix(version).rules:
            assert title in rule.reference and ">" in rule.reference


def test_derived_end_says_so():
    # The 4.0 page lists SSH into VMs from K8S but no K8S egress for it: the planner closes
    # the gap and cites the common egress rule on SSH to the VM subnet.
    rule = next(
        r
        for r in full_matrix("4.0").rules
        if r.role == "kubernetes_nodes"
        and r.direction == "egress"
        and r.ports == (22, 22)
    )
    assert rule.peer.role == "external_vms"
    assert "SSH to the VM subnet" in rule.reference


def test_catalog_rejects_unknown_roles_and_lines():
    data = {
        "release_lines": {"3": {"versions": ["3"], "title": "t"}},
        "flows": [
            {
                "id": "x",
                "from": "nomad",
                "to": "vcs",
                "protocol": "tcp",
                "ports": [22],
                "purpose": "p",
                "lines": ["3"],
            }
        ],
    }
    with pytest.raises(ValueError, match="unknown end 'nomad'"):
        parse_catalog(data)
    data["flows"][0].update({"from": "nomad_clients", "lines": ["9"]})
    with pytest.raises(ValueError, match="unknown release line '9'"):
        parse_catalog(data)
    data["flows"][0].update({"lines": ["3"], "notes": {"4.0": "why"}})
    with pytest.raises(ValueError, match="unknown release line '4.0'"):
        parse_catalog(data)
    for key, value in (("ports_by_line", [2222]), ("refs_by_line", {"egress": "x"})):
        data["flows"][0].update({"notes": {}, key: {"4.1": value}})
        with pytest.raises(ValueError, match="unknown release line '4.1'"):
            parse_catalog(data)
        del data["flows"][0][key]
    data["flows"][0]["ports_by_line"] = {"3": [70000]}
    with pytest.raises(ValueError, match="port 70000 is out of range"):
        parse_catalog(data)


def test_every_release_line_covers_its_versions():
    catalog = load_catalog()
    versions = [v for line in catalog.release_lines.values() for v in line["versions"]]
    from generator.profile import load_schema

    assert sorted(versions) == sorted(
        load_schema()["properties"]["server_version"]["enum"]
    )


# --- catalog.json, the copy of catalog.yaml the commands read -----------------------


def _compile_script():
    import importlib.util

    from conftest import ROOT

    path = ROOT / "scripts" / "compile_catalog.py"
    spec = importlib.util.spec_from_file_location("compile_catalog", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_shipped_json_is_what_the_yaml_compiles_to():
    from generator import catalog

    expected = _compile_script().source()
    assert (
        catalog.CATALOG_JSON.read_text() == expected
    ), "stale: run python scripts/compile_catalog.py"
    shipped = json.loads(expected)["catalog"]
    assert shipped == catalog.read_yaml(catalog.CATALOG_PATH.read_bytes())


def test_the_json_is_read_only_while_it_matches_the_yaml(monkeypatch, tmp_path):
    from generator import catalog

    copy = json.loads(catalog.CATALOG_JSON.read_text())
    copy["catalog"]["flows"] = copy["catalog"]["flows"][:1]  # tell the two apart
    fake = tmp_path / "catalog.json"
    fake.write_text(json.dumps(copy))
    monkeypatch.setattr(catalog, "CATALOG_JSON", fake)
    assert len(catalog.load_catalog.__wrapped__().flows) == 1  # the JSON

    copy["yaml_sha256"] = "0" * 64  # catalog.yaml edited since
    fake.write_text(json.dumps(copy))
    from_yaml = parse_catalog(catalog.read_yaml(catalog.CATALOG_PATH.read_bytes()))
    assert catalog.load_catalog.__wrapped__() == from_yaml
    assert len(from_yaml.flows) > 1

    for broken in ("{", "[]", '{"yaml_sha256": 1}', ""):
        fake.write_text(broken)
        assert catalog.load_catalog.__wrapped__() == from_yaml
    fake.unlink()
    assert catalog.load_catalog.__wrapped__() == from_yaml


# --- topologies beyond the page: every row it changes, with the note saying why ----

EXTERNAL_SERVERS = """
nomad:
  servers: external
"""
# Rows a 4.8+ install with the Nomad servers outside the cluster adds (SRV: the
# servers' role; the balancer and its health checks are peer lists), each with the
# note that says why.
ADDED_EXTERNAL = {
    "K8S out tcp 4646 SRV": "nomad-servers-api",
    "K8S out tcp 4647 SRV": "nomad-servers-api",
    "K8S out tcp 4646 nomad_server_balancer": "nomad-servers-api",
    "K8S out tcp 4647 nomad_server_balancer": "nomad-servers-api",
    "SRV in tcp 4646 K8S": "nomad-servers-api",
    "SRV in tcp 4647 K8S": "nomad-servers-api",
    "NOMAD out tcp 4647 SRV": "nomad-servers-rpc",
    "NOMAD out tcp 4647 nomad_server_balancer": "nomad-servers-rpc",
    "SRV in tcp 4647 NOMAD": "nomad-servers-rpc",
    "SRV out tcp 4647 NOMAD": "nomad-servers-to-clients",
    "NOMAD in tcp 4647 SRV": "nomad-servers-to-clients",
    "SRV in tcp 4647-4648 SRV": "nomad-servers-api",
    "SRV out tcp 4647-4648 SRV": "nomad-servers-api",
    "SRV in udp 4648 SRV": "nomad-servers-api",
    "SRV out udp 4648 SRV": "nomad-servers-api",
    "SRV in tcp 4646 nomad_server_health_checks": "nomad-servers-health",
    # The common rules: the servers are compute too.
    "SRV in tcp 22 ssh_admin": "nomad-servers-health",
    "SRV out udp 53 dns": "nomad-servers-health",
    "SRV out tcp 53 dns": "nomad-servers-health",
    "SRV out tcp 80 internet": "nomad-servers-health",
    "SRV out tcp 443 internet": "nomad-servers-health",
}
# The page's rows of servers inside the cluster, which move to the servers' role.
DROPPED_EXTERNAL = {
    "LB in tcp 4647 NOMAD": "nomad-servers-rpc",
    "NOMAD out tcp 4647 LB": "nomad-servers-rpc",
    "K8S out tcp 4647 NOMAD": "nomad-servers-to-clients",
    "NOMAD in tcp 4647 K8S": "nomad-servers-to-clients",
}


def _rows(text: str) -> set[tuple]:
    """rows(), with SRV for the Nomad servers."""
    ABBR["SRV"] = "nomad_servers"
    try:
        return rows(text)
    finally:
        del ABBR["SRV"]


def noted(matrix, flow: str) -> bool:
    return any(n.startswith(f"{flow}: ") for n in matrix.notes)


@pytest.mark.parametrize("version", ["4.8", "4.9", "4.10"])
def test_nomad_servers_outside_the_cluster_change_the_page_with_notes(version):
    text = FULL.format(version=version, obsolete="false") + EXTERNAL_SERVERS
    text = text.replace("peers:\n", "peers:\n  nomad_server_balancer: [10.0.64.0/24]\n")
    matrix = plan(profile_from(text))
    got = set(rule_flows(matrix))
    page = rows(PAGE_4_3) - rows("\n".join(DROPPED["4.3-4.10"]))
    assert got - page == _rows("\n".join(ADDED_EXTERNAL))
    assert page - got == rows("\n".join(DROPPED_EXTERNAL))
    for note in set(ADDED_EXTERNAL.values()) | set(DROPPED_EXTERNAL.values()):
        assert noted(matrix, note), note
    # The balancer's health checks default to its own addresses (an AWS NLB's).
    (check,) = [r for r in matrix.rules if r.peer.name == "nomad_server_health_checks"]
    assert check.peer.cidrs == ("10.0.64.0/24",)


def test_podman_widens_the_nomad_clients_re_run_range_with_a_note():
    text = FULL.format(version="4.10", obsolete="false")
    matrix = plan(profile_from(text + "nomad:\n  container_runtime: podman\n"))
    got = set(rule_flows(matrix))
    page = rows(PAGE_4_3) - rows("\n".join(DROPPED["4.3-4.10"]))
    assert got - page == rows("NOMAD in tcp 32768-65535 ssh_rerun")
    assert page - got == rows("NOMAD in tcp 64535-65535 ssh_rerun")
    (note,) = [n for n in matrix.notes if n.startswith("nomad-rerun-ssh-podman: ")]
    assert "32768-60999" in note and "use_podman" in note
