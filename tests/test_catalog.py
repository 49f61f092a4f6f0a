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

# role dir proto ports peer   (rows of the 4.0-4.2 page, both ends of each flow)
PAGE_4_0 = """
LB in tcp 80 external
LB in tcp 443 external
LB in tcp 3000 NOMAD
LB in tcp 4647 NOMAD
LB in tcp 8585 NOMAD
LB out tcp 30000-32767 K8S
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
NOMAD out tcp 22 vcs
VM out tcp 22 vcs
K8S out tcp 22 VM
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

# 4.3 removed K8S->VM 2376, NOMAD->VM 2376, NOMAD->LB 3000/8585 and the AWS VM group's
# 22 and 2376 rows; the page still prints LB 3000/8585, VM 2376 from K8S and NOMAD and
# VM 22 from K8S, which belonged to the vm-service pod and Docker over TLS: stale.
# NOMAD -> VM 22 stays required (both ends printed, the upgrade notes name only 2376;
# remote Docker jobs still reach their VM over SSH from the Nomad client).
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


@pytest.mark.parametrize("version", ["3", "4.0", "4.1", "4.2"])
def test_rows_up_to_4_2(version):
    assert facts(full_matrix(version)) == rows(PAGE_4_0)


@pytest.mark.parametrize(
    "version", ["4.3", "4.4", "4.5", "4.6", "4.7", "4.8", "4.9", "4.10"]
)
def test_rows_from_4_3_drop_stale_rows(version):
    assert facts(full_matrix(version)) == rows(PAGE_4_0) - rows(STALE_4_3)


@pytest.mark.parametrize("version", ["4.3", "4.10"])
def test_stale_rows_kept_on_request_and_marked(version):
    matrix = full_matrix(version, obsolete=True)
    assert facts(matrix) == rows(PAGE_4_0)
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
    assert "2376" in note and "remote Docker" in note
    assert not any("nomad-vm-ssh: left out" in n for n in matrix.notes)


@pytest.mark.parametrize("version", ["3", "4.2", "4.3"])
def test_the_nodes_ssh_reading_is_recorded(version):
    # "SSH for all instances, at least to the VM subnet and the VCS": the nodes get
    # SSH to the VMs where the vm-service pod exists, never to the VCS.
    matrix = full_matrix(version)
    nodes_ssh = {
        r.peer.role or r.peer.name
        for r in matrix.for_role("kubernetes_nodes", "egress")
        if r.ports == (22, 22)
    }
    assert nodes_ssh == ({"external_vms"} if version != "4.3" else set())
    notes = " ".join(matrix.notes)
    assert "vcs-ssh: the Kubernetes nodes get no SSH to the VCS" in notes
    assert "at least to the VM subnet and the VCS" in notes
    assert "k8s-vm-ssh:" in notes


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
