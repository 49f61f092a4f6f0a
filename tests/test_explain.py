"""explain's answers as a user reads them: exit codes, partial coverage, hints."""

from __future__ import annotations

import json

from click.testing import CliRunner

from generator.cli import main

from conftest import ROOT

VPN = ROOT / "profiles" / "aws-private-vpn.yaml"  # external: 172.16.0.0/12


def explain(profile, *args):
    return CliRunner().invoke(
        main, ["explain", str(profile), *map(str, args)], catch_exceptions=False
    )


def test_exit_codes_allowed_blocked_bad_input(tmp_path):
    """The one table: 0 allowed, 2 blocked (a finding), 1 bad input."""
    ok = explain(
        VPN, "--from", "nomad_clients", "--to", "load_balancer", "--port", 4647
    )
    assert ok.exit_code == 0 and ": allowed" in ok.stdout
    no = explain(
        VPN, "--from", "nomad_clients", "--to", "load_balancer", "--port", 4648
    )
    assert no.exit_code == 2 and ": blocked" in no.stdout  # a finding
    bad = explain(VPN, "--from", "nomad", "--to", "load_balancer", "--port", 443)
    assert bad.exit_code == 1 and "neither a role" in bad.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text(VPN.read_text().replace("10.0.16.0/20", "10.0.16.1/20"))
    bad = explain(broken, "--from", "nomad_clients", "--to", "load_balancer")
    assert bad.exit_code == 1  # --port missing: a usage error is an error
    bad = explain(
        broken, "--from", "nomad_clients", "--to", "load_balancer", "--port", 1
    )
    assert bad.exit_code == 1 and "did you mean 10.0.16.0/20" in bad.stderr


def test_a_cidr_partly_covered_is_answered_per_part():
    result = explain(VPN, "--from", "0.0.0.0/0", "--to", "load_balancer", "--port", 443)
    assert result.exit_code == 2
    lines = result.stdout.splitlines()
    assert (
        lines[0] == "0.0.0.0/0 -> load_balancer tcp/443: partly allowed, part by part:"
    )
    assert lines[1] == "  allowed from 172.16.0.0/12:"
    assert "load_balancer_ingress_tcp_443_external" in lines[3]
    # The rest of 0.0.0.0/0 is written as diff and audit write it.
    blocked = next(line for line in lines if line.startswith("  blocked from"))
    assert blocked == "  blocked from 0.0.0.0/0 except 172.16.0.0/12:"
    data = json.loads(
        explain(
            VPN,
            "--from",
            "0.0.0.0/0",
            "--to",
            "load_balancer",
            "--port",
            443,
            "--format",
            "json",
        ).stdout
    )
    assert data["status"] == "partly allowed" and not data["allowed"]
    assert data["parts"][0]["from"] == "172.16.0.0/12" and data["parts"][0]["allowed"]
    assert not any(p["allowed"] for p in data["parts"][1:])
    # The JSON parts are the pieces themselves: with the allowed one they make up
    # 0.0.0.0/0, without overlap.
    import ipaddress

    nets = [ipaddress.ip_network(p["from"]) for p in data["parts"]]
    assert sum(n.num_addresses for n in nets) == 2**32
    assert list(ipaddress.collapse_addresses(nets)) == [
        ipaddress.ip_network("0.0.0.0/0")
    ]


def test_a_cidr_wholly_inside_or_outside_has_no_parts():
    inside = explain(
        VPN, "--from", "172.16.8.0/24", "--to", "load_balancer", "--port", 443
    )
    assert inside.exit_code == 0 and "part by part" not in inside.stdout
    outside = explain(
        VPN, "--from", "8.8.8.0/24", "--to", "load_balancer", "--port", 443
    )
    assert outside.exit_code == 2 and "part by part" not in outside.stdout


def test_host_bits_are_a_warning_with_the_normalised_value():
    result = explain(
        VPN, "--from", "172.16.3.4/12", "--to", "load_balancer", "--port", 443
    )
    assert result.exit_code == 0
    assert (
        "warning: 172.16.3.4/12 has host bits set; explaining 172.16.0.0/12"
        in result.stderr
    )
    assert result.stdout.startswith("172.16.0.0/12 -> load_balancer")
    data = json.loads(
        explain(
            VPN,
            "--from",
            "172.16.3.4/12",
            "--to",
            "load_balancer",
            "--port",
            443,
            "--format",
            "json",
        ).stdout
    )
    assert data["warnings"] == [
        "172.16.3.4/12 has host bits set; explaining 172.16.0.0/12"
    ]
    plain = explain(VPN, "--from", "172.16.3.4", "--to", "load_balancer", "--port", 443)
    assert "warning" not in plain.stderr


def test_transparent_balancer_is_explained_on_the_nodes():
    """The balancer has no firewall: its ingress is checked on the nodes, and the
    Nomad clients' RPC on its public address arrives from the Cloud NAT."""
    gcp = ROOT / "profiles" / "gcp.yaml"
    result = explain(gcp, "--from", "0.0.0.0/0", "--to", "load_balancer", "--port", 443)
    assert result.exit_code == 0, result.stdout
    assert "ingress on kubernetes_nodes:" in result.stdout
    rpc = explain(
        gcp, "--from", "nomad_clients", "--to", "load_balancer", "--port", 4647
    )
    assert rpc.exit_code == 0, rpc.stdout
    lines = rpc.stdout.splitlines()
    assert lines[1] == (
        "  egress on nomad_clients (to load_balancer_public_ips (198.51.100.30/32)):"
    )
    assert "  on the way: arrives from the NAT gateways (198.51.100.20/32)" in (
        rpc.stdout
    )
    assert "  ingress on kubernetes_nodes (from nat_gateway (198.51.100.20/32)):" in (
        lines
    )
    nodes = explain(
        gcp, "--from", "0.0.0.0/0", "--to", "kubernetes_nodes", "--port", 443
    )
    assert nodes.exit_code == 0, nodes.stdout


def test_the_nomad_server_pod_reaches_the_clients_from_the_pod_range():
    gcp = ROOT / "profiles" / "gcp.yaml"
    result = explain(
        gcp, "--from", "kubernetes_nodes", "--to", "nomad_clients", "--port", 4647
    )
    assert result.exit_code == 0, result.stdout
    assert "arrives from the pod range (10.4.0.0/14) because the Nomad server" in (
        result.stdout
    )
    assert "nomad_clients_ingress_tcp_4647_pods" in result.stdout
    # Without the pod range's rule the same route is blocked, naming the pods.
    text = gcp.read_text().replace("  pod_cidrs: [10.4.0.0/14]\n", "")
    bare = gcp.parent.parent / "out" / "gcp-no-pods.yaml"
    bare.parent.mkdir(exist_ok=True)
    bare.write_text(text)
    assert (
        "pods"
        not in explain(
            bare, "--from", "kubernetes_nodes", "--to", "nomad_clients", "--port", 4647
        ).stdout
    )


def test_obsolete_flow_left_out_gets_a_note():
    path = ROOT / "profiles" / "aws-private-vpn-4.10.yaml"
    result = explain(
        path, "--from", "nomad_clients", "--to", "load_balancer", "--port", 3000
    )
    assert result.exit_code == 2
    assert (
        "flow vm-service" in result.stdout and "include_obsolete: true" in result.stdout
    )
    # The same question on 4.2, where the flow is current, is simply allowed.
    old = explain(
        VPN, "--from", "nomad_clients", "--to", "load_balancer", "--port", 3000
    )
    assert old.exit_code == 0 and "include_obsolete" not in old.stdout
    # An unrelated blocked port gets no such note.
    other = explain(
        path, "--from", "nomad_clients", "--to", "load_balancer", "--port", 3001
    )
    assert "include_obsolete" not in other.stdout


NOMAD_SERVERS = ROOT / "profiles" / "aws-nomad-servers.yaml"


def test_nodes_reach_the_vcs_on_22_on_every_release_line():
    for version in ("3", "4.0", "4.2", "4.3", "4.10"):
        result = explain(
            VPN,
            "--from",
            "kubernetes_nodes",
            "--to",
            "vcs",
            "--port",
            22,
            "--server-version",
            version,
        )
        assert result.exit_code == 0, (version, result.output)
        assert "tcp/22: allowed" in result.stdout
        assert "kubernetes_nodes_egress_tcp_22_vcs" in result.stdout


def test_a_3x_profile_opens_the_vms_re_run_range_not_54782():
    v3 = ROOT / "profiles" / "aws-private-vpn-3.yaml"
    for port, code in ((64535, 0), (65535, 0), (54782, 2)):
        result = explain(
            v3, "--from", "ssh_rerun", "--to", "external_vms", "--port", port
        )
        assert result.exit_code == code, (port, result.output)


def test_nomad_servers_outside_the_cluster_are_a_role_to_ask_about():
    rpc = explain(
        NOMAD_SERVERS,
        "--from",
        "nomad_clients",
        "--to",
        "nomad_servers",
        "--port",
        4647,
    )
    assert rpc.exit_code == 0 and "flow nomad-servers-rpc" in rpc.stdout
    # The circleci-proxy balancer no longer fronts Nomad.
    lb = explain(
        NOMAD_SERVERS,
        "--from",
        "nomad_clients",
        "--to",
        "load_balancer",
        "--port",
        4647,
    )
    assert lb.exit_code == 2 and ": blocked" in lb.stdout  # blocked
    # Podman's re-run range.
    rerun = explain(
        NOMAD_SERVERS, "--from", "ssh_rerun", "--to", "nomad_clients", "--port", 40000
    )
    assert rerun.exit_code == 0 and "nomad-rerun-ssh-podman" in rerun.stdout
    # With the servers in the cluster there is no such role to ask about.
    inside = explain(
        VPN, "--from", "nomad_clients", "--to", "nomad_servers", "--port", 4647
    )
    assert inside.exit_code == 1  # bad input
    assert "nomad_servers is not a role of this install" in inside.stderr
