"""verify and explain: the plan, the flow query, and real packets in namespaces."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import replace

import pytest
from click.testing import CliRunner

from conftest import EXAMPLES, ROOT, example, needs_root, profile_from
from generator.cli import main
from generator.explain import endpoint, explain
from generator.optimizer import optimize
from generator.planner import plan
from generator import hostfw
from generator.planner import paths_of
from generator.verify import endpoint as bed_endpoint
from generator.verify import (
    CONTAINER_POOL,
    VerifyError,
    ENGINES,
    STAND_IN_RANGE,
    TIMEOUT,
    Outcome,
    NamespaceBed,
    ProbePlan,
    client_ports,
    make_plan,
    observe_with_retry,
    report,
    rollback,
    ruleset,
    write_files,
)
from test_emit_iptables import STATELESS

# Beside the shipped profiles: a stateless one, and Network Load Balancers without a
# security group that keep the client's address or do not (load_balancer.kind).
VPN = (ROOT / "profiles" / "aws-private-vpn.yaml").read_text()
BALANCERS = {
    "nlb": VPN.replace("  transparent: false\n", "  kind: nlb\n"),
    "nlb-snat": VPN.replace(
        "  transparent: false\n", "  kind: nlb\n  preserve_client_ip: false\n"
    ),
}
CASES = EXAMPLES + ["stateless", *BALANCERS]
MISSING = [t for t in ("ip", "iptables-restore", "ipset", "nft") if not shutil.which(t)]
needs_tools = pytest.mark.skipif(
    bool(MISSING),
    reason=f"missing {', '.join(MISSING)} (apt-get install iproute2 iptables ipset nftables)",
)


def load_case(name: str):
    if name in BALANCERS:
        prof = profile_from(BALANCERS[name])
    else:
        prof = profile_from(STATELESS) if name == "stateless" else example(name)
    return prof, optimize(plan(prof))[0]


# The probes explain answers: what the profile's rules decide, on the way the packet
# takes. The others are the host firewall's own policies and the bed's properties
# (the host essentials, the jobs policy, stateless replies, an operator's DROP after
# rulegen's jump, the rollback guard), which no rule of the matrix decides alone.
EXPLAINED = ("matrix", "forward", "dnat", "ipv6", "path")


def verdict(matrix, probe, prof) -> bool:
    """explain's answer for a probe, asked from the command line's side: the probe's
    hosts as endpoints, the profile's paths."""
    src = bed_endpoint(probe.src, probe.six)
    dst = bed_endpoint(probe.dst, probe.six, probe.to)
    return explain(
        matrix,
        src,
        dst,
        probe.port,
        probe.protocol,
        prof.subnets,
        paths=paths_of(prof),
    ).allowed


def without(matrix, rule):
    return replace(matrix, rules=tuple(r for r in matrix.rules if r is not rule))


def kind(rule) -> tuple:
    ports = (
        "all"
        if rule.ports is None
        else "one" if rule.ports[0] == rule.ports[1] else "range"
    )
    peer = "role" if rule.peer.role else "cidrs"
    return (rule.direction, peer, rule.protocol, ports, rule.is_return)


def detected(matrix, rule, probes, prof) -> bool:
    """Does removing the rule change the outcome of a probe (by explain)?"""
    thinner = without(matrix, rule)
    return any(
        verdict(thinner, p, prof) != p.expect for p in probes if p.kind in EXPLAINED
    )


def essential_covers(rule, prof) -> bool:
    """A host essential allows all of the rule's traffic (pods and their node reach
    each other)."""
    essential = hostfw.essentials_for(prof, rule.role).pods
    if not rule.peer.cidrs or not essential:
        return False
    pods = [ipaddress.ip_network(c) for c in essential]
    nets = [ipaddress.ip_network(c) for c in rule.peer.cidrs]
    return all(any(n.subnet_of(p) for p in pods) for n in nets)


def host_shadowed(matrix, rule, prof) -> bool:
    """Another rule of the same end allows all of it once roles become their subnets,
    or a host essential does."""
    subnets = prof.subnets
    if essential_covers(rule, prof):
        return True

    def nets(r):
        cidrs = subnets.get(r.peer.role, ()) if r.peer.role else r.peer.cidrs
        return [ipaddress.ip_network(c) for c in cidrs]

    def inside(inner, outer):
        if outer is None:
            return True
        return inner is not None and outer[0] <= inner[0] and inner[1] <= outer[1]

    for other in matrix.for_role(rule.role, rule.direction):
        if other is rule or other.protocol not in ("all", rule.protocol):
            continue
        if not inside(rule.ports, other.ports):
            continue
        if other.source_ports and not inside(rule.source_ports, other.source_ports):
            continue
        if all(any(n.subnet_of(o) for o in nets(other)) for n in nets(rule)):
            return True
    return False


@functools.lru_cache(maxsize=1)
def removals(least: int = 2) -> dict[str, list]:
    """A few removals per profile that together cover every kind of rule.

    Each kind goes to the profile with the fewest removals so far; removing every
    rule of every profile would take minutes and prove little more.
    """
    found: dict[str, list] = {}
    for case in CASES:
        prof, matrix = load_case(case)
        probes = make_plan(matrix, prof.subnets, prof).probes
        found[case] = [
            r
            for r in matrix.rules
            if detected(matrix, r, probes, prof) and not essential_covers(r, prof)
        ]
    chosen: dict[str, list] = {case: [] for case in CASES}
    kinds = sorted({kind(r) for rules in found.values() for r in rules}, key=str)
    for k in kinds:
        case = min(
            (c for c in CASES if any(kind(r) == k for r in found[c])),
            key=lambda c: (len(chosen[c]), CASES.index(c)),
        )
        chosen[case].append(next(r.name for r in found[case] if kind(r) == k))
    for case in CASES:
        for rule in found[case]:
            if len(chosen[case]) >= least:
                break
            if rule.name not in chosen[case]:
                chosen[case].append(rule.name)
    return chosen


@pytest.fixture(params=CASES)
def case(request) -> str:
    return request.param


# --- the plan and explain, no root needed -----------------------------------------


def test_every_rule_has_a_probe_that_must_connect(case):
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    named = {w for p in test_plan.probes if p.expect for w in p.why}
    for rule in matrix.rules:
        v4 = rule.peer.role or any(":" not in c for c in rule.peer.cidrs)
        if rule.is_return or not v4:
            continue
        assert any(rule.name in w for w in named), rule.name


def test_forbidden_set_is_there(case):
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    must_fail = [p for p in test_plan.probes if not p.expect and p.kind == "matrix"]
    for role in ("nomad_clients", "external_vms"):
        same = [p for p in must_fail if p.src.role == role and p.dst.role == role]
        assert {(p.src.key, p.dst.key) for p in same} == {
            (f"{role}#1", f"{role}#2"),
            (f"{role}#2", f"{role}#1"),
        }
    roles = matrix.roles()
    unlisted = {
        (p.src.role, p.dst.role) for p in must_fail if p.port == test_plan.unlisted
    }
    for a in roles:
        for b in roles:
            if (
                a != b
                and "kubernetes_nodes" not in (a, b)
                or {a, b}
                == {
                    "nomad_clients",
                    "external_vms",
                }
            ):
                assert (a, b) in unlisted
    assert any("external" in w for p in must_fail for w in p.why)


def test_hosts_use_only_profile_addresses_or_the_stand_in(case):
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    addresses = [h.address for h in test_plan.hosts if not h.parent]
    assert len(addresses) == len(set(addresses))
    known = [ipaddress.ip_network(c) for nets in prof.subnets.values() for c in nets]
    known += [ipaddress.ip_network(c) for r in matrix.rules for c in r.peer.cidrs]
    essentials = [
        ipaddress.ip_network(c)
        for role in matrix.roles()
        for c in hostfw.essentials_for(prof, role).ntp
        + hostfw.essentials_for(prof, role).metadata
    ]
    # the metadata service jobs are kept from, on every cloud
    essentials += [
        ipaddress.ip_network(c)
        for role in matrix.roles()
        for c in (hostfw.jobs_for(prof, role) or hostfw.Jobs()).metadata
    ]
    for host in test_plan.hosts:
        if host.parent:  # behind its host, in a pod range or the shared space
            pods = [ipaddress.ip_network(c) for c in prof.pod_cidrs]
            assert any(host.address in n for n in pods + [CONTAINER_POOL])
            continue
        if any(host.address in n for n in essentials):
            continue
        if host.stand_in:
            assert host.address in STAND_IN_RANGE
            specific = [n for n in known if n.prefixlen and n.version == 4]
            assert not any(host.address in n for n in specific)
        else:
            assert any(host.address in n for n in known if n.prefixlen), host.key
        if host.role:
            nets = [ipaddress.ip_network(c) for c in prof.subnets[host.role]]
            assert any(host.address in n for n in nets)


def test_a_page_property_the_rules_break_stops_the_plan():
    """verify expects what explain answers; where a page property asks for a probe
    (two Nomad clients never talk), rules that break it stop the plan."""
    prof, matrix = load_case("aws-private-vpn")
    extra = [
        replace(r, peer=replace(r.peer, role="nomad_clients"), flow="bad")
        for r in matrix.rules
        if r.role == "nomad_clients"
        and r.peer.role == "kubernetes_nodes"
        and r.ports == (4647, 4647)
    ]
    extra += [replace(r, role="nomad_clients", direction="egress") for r in extra]
    broken = replace(matrix, rules=matrix.rules + tuple(extra))
    with pytest.raises(VerifyError, match="no traffic between two nomad_clients"):
        make_plan(broken, prof.subnets, prof)


def test_host_firewall_probes_are_planned(case):
    """Containers behind a bridge with DNAT, essentials, IPv6 and the operator's rule."""
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    kinds = {(p.kind, p.expect) for p in test_plan.probes}
    assert {("forward", True), ("forward", False)} <= kinds
    assert ("ipv6", False) in kinds and ("operator", False) in kinds
    assert ("essential", True) in kinds
    boxes = [h for h in test_plan.hosts if h.parent]
    assert {b.parent.role for b in boxes} == set(matrix.roles()) - {"load_balancer"}
    assert all(h.address6 for h in test_plan.hosts if not h.parent)
    # a NodePort or published port, from a host that may and from one that may not
    published = [p for p in test_plan.probes if "through DNAT" in " ".join(p.why)]
    assert any(not p.expect for p in published)
    # published ports land on the containers' 80; one no rule opens is shut to all
    assert all(b.container_port == 80 for b in boxes)
    unopened = [p for p in test_plan.probes if p.tag == "unopened"]
    assert unopened and not any(p.expect for p in unopened)
    # jobs on Nomad clients and VMs, behind Docker's bridges, with named probes
    jobs = {p.tag: p for p in test_plan.probes if p.kind == "jobs" and p.tag}
    job_boxes = [b for b in boxes if b.parent.role in hostfw.JOB_HOSTS]
    podman = prof.container_runtime == "podman"  # the clients' jobs behind podman0
    assert {b.bridge[:3] for b in job_boxes} == {"pod" if podman else "doc", "br-"}
    assert not jobs["metadata"].expect and jobs["metadata"].port == 80
    assert str(jobs["metadata"].dst.address) == "169.254.169.254"
    if "internet" in jobs:
        assert jobs["internet"].expect and jobs["internet"].port == 443
    if any(r.flow == "nomad-rpc-lb" for r in matrix.rules):
        assert not jobs["host-only"].expect
    if not matrix.stateful:
        (syn,) = [
            p
            for p in test_plan.probes
            if p.tag == "syn" and p.dst.role == "kubernetes_nodes"
        ]
        assert syn.sport == 443 and not syn.expect


@pytest.mark.deep
def test_removals_cover_every_kind_of_rule():
    kinds = {
        kind(r)
        for c in CASES
        for r in load_case(c)[1].rules
        if not essential_covers(r, load_case(c)[0])  # no host can tell it is gone
    }
    picked = {
        kind(r)
        for c, names in removals().items()
        for r in load_case(c)[1].rules
        if r.name in names
    }
    assert picked == kinds


def test_a_rule_whose_removal_no_probe_sees_is_shadowed_on_the_host(case):
    """Only a rule that another rule already covers may go unnoticed."""
    prof, matrix = load_case(case)
    probes = make_plan(matrix, prof.subnets, prof).probes
    for rule in matrix.rules:
        if not detected(matrix, rule, probes, prof):
            assert host_shadowed(matrix, rule, prof), rule.name


def test_explain_names_both_ends_and_the_blocking_end():
    prof, matrix = load_case("generic-baremetal")
    ok = explain(
        matrix, endpoint("nomad_clients"), endpoint("load_balancer"), 4647, "tcp"
    )
    assert ok.allowed and [c.where for c in ok.checks] == [
        "egress on nomad_clients",
        "ingress on load_balancer",
    ]
    assert all(r.flow == "nomad-rpc-lb" for c in ok.checks for r in c.rules)
    # An address has no firewall of ours: only the role's end is checked.
    no = explain(matrix, endpoint("10.8.0.5"), endpoint("nomad_clients"), 4647)
    assert not no.allowed
    assert [c.where for c in no.blocked_by] == ["ingress on nomad_clients"]
    rerun = explain(matrix, endpoint("10.8.0.5"), endpoint("nomad_clients"), 65000)
    assert rerun.allowed and rerun.flows == ["nomad-rerun-ssh"]


def test_explain_command():
    runner = CliRunner()
    path = str(ROOT / "profiles" / "aws-public-ip.yaml")
    for source, port, seen in (
        ("kubernetes_nodes", 22, "nat_gateway (198.51.100.10/32, 198.51.100.11/32)"),
        ("nomad_clients", 2376, "nomad_client_public_ips (198.51.100.64/27)"),
    ):
        args = ["explain", path, "--from", source, "--to", "external_vms"]
        result = runner.invoke(main, args + ["--port", str(port)])
        # The VMs are reached on their public addresses: allowed through the hop.
        assert result.exit_code == 0, result.output
        assert f"ingress on external_vms (from {seen}):" in result.output
        assert "egress on" in result.output and "vm_public_ips" in result.output
    result = runner.invoke(
        main,
        ["explain", path, "--from", "198.51.100.10", "--to", "external_vms"]
        + ["--port", "2376", "--format", "json"],
    )
    data = json.loads(result.output)
    assert data["allowed"] and data["checks"][0]["rules"][0]["flow"].startswith(
        "k8s-vm-docker"
    )
    # An address outside the NAT (a node's own) is blocked at the VMs.
    result = runner.invoke(
        main,
        ["explain", path, "--from", "10.1.0.10", "--to", "external_vms"]
        + ["--port", "2376"],
    )
    assert result.exit_code == 2  # blocked
    assert "blocked by ingress on external_vms" in result.output
    bad = runner.invoke(
        main, ["explain", path, "--from", "nomad", "--to", "x"] + ["--port", "1"]
    )
    assert bad.exit_code == 1 and "neither a role" in bad.output
    assert bad.exception is None or isinstance(bad.exception, SystemExit)


def test_verify_command_errors_are_clear(monkeypatch):
    runner = CliRunner()
    path = str(ROOT / "profiles" / "generic-baremetal.yaml")
    result = runner.invoke(
        main, ["verify", path, "--drop-rule", "nomad_clients_egress"]
    )
    assert result.exit_code == 1 and "no rule named" in result.output
    assert isinstance(result.exception, SystemExit)
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    result = runner.invoke(main, ["verify", path])
    assert result.exit_code == 1 and "needs root" in result.output


# --- real packets -------------------------------------------------------------------


def our_namespaces() -> set[str]:
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    return {l.split()[0] for l in out.stdout.splitlines() if l.startswith("rgv")}


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_verify_passes_and_each_removal_fails(case, engine, tmp_path, record_property):
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    full = tmp_path / "full"
    full.mkdir()
    write_files(full, ruleset(matrix, prof, engine=engine))
    with NamespaceBed(test_plan.hosts) as bed:
        bed.load(full)
        observed = observe_with_retry(bed, test_plan.probes, matrix)
        outcome = Outcome(matrix, test_plan, observed, 0.0)
        assert outcome.ok, report(outcome)
        # The differential test: explain, asked from the command line's side, on
        # every probe verify sent; the bed's own properties by their plan.
        explained = [p for p in test_plan.probes if p.kind in EXPLAINED]
        for probe in explained:
            passed = outcome.passed(probe)
            assert verdict(matrix, probe, prof) == passed, probe.text()
        paths = sum(p.kind == "path" for p in explained)
        record_property("probes", len(test_plan.probes))
        print(
            f"{case} {engine}: {len(test_plan.probes)} probes; explain agrees with"
            f" all {len(explained)} it answers ({paths} through hops), the"
            f" {len(test_plan.probes) - len(explained)} of the bed's own properties"
            " (host essentials, jobs, stateless replies, the operator's DROP) as"
            " planned"
        )
        for rule in [r for r in matrix.rules if r.name in removals()[case]]:
            folder = tmp_path / rule.name
            folder.mkdir()
            write_files(folder, ruleset(matrix, prof, [rule], engine))
            bed.load(folder, [rule.role])
            # Only probes to or from a host of that role can change.
            touched = [
                p for p in test_plan.probes if rule.role in (p.src.role, p.dst.role)
            ]
            # One round, no retry: a slow reply could only look like the expected miss.
            ports, reserved = client_ports(matrix)
            seen = bed.observe(touched, TIMEOUT, ports, reserved)
            broken = Outcome(matrix, ProbePlan(test_plan.hosts, touched, 0), seen, 0.0)
            assert not broken.ok, f"removing {rule.name} went unnoticed"
            misses = [l for l in report(broken).splitlines() if "MISMATCH" in l]
            assert any(rule.name in l and rule.flow in l for l in misses), misses
            thinner = without(matrix, rule)
            for probe in touched:
                if probe.kind in EXPLAINED:
                    passed = broken.passed(probe)
                    assert verdict(thinner, probe, prof) == passed, probe.text()
            bed.load(full, [rule.role])
    assert not _with_prefix({bed.prefix})


@needs_root
@needs_tools
def test_verify_tells_a_terminal_each_phase_as_it_starts():
    import pty

    leader, follower = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "verify"]
        + [str(ROOT / "profiles" / "generic-baremetal.yaml")],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=follower,
        text=True,
    )
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the other end closed: verify is done
            break
        if not chunk:
            break
        seen += chunk
    out = proc.communicate(timeout=120)[0]
    os.close(leader)
    assert proc.returncode == 0, seen
    phases = [l for l in seen.decode().splitlines() if l.startswith("verify: ")]
    assert [p.split(" (")[0].split(":")[1].split()[0] for p in phases] == [
        "planned",
        "building",
        "loading",
        "sending",
        "proving",
        "removing",
    ]
    assert all(p.endswith(" s)") for p in phases)
    assert "verify: " not in out and "0 mismatches" in out  # the result on stdout


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_verify_command_fails_naming_the_flow(engine):
    path = ROOT / "profiles" / "generic-baremetal.yaml"
    name = "external_vms_ingress_tcp_54782_ssh_rerun"
    result = subprocess.run(
        [sys.executable, "-m", "generator", "verify", str(path), "--drop-rule", name]
        + ["--engine", engine],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stdout + result.stderr  # a finding
    assert "verify: sending" not in result.stderr  # no progress into a pipe
    misses = [l for l in result.stdout.splitlines() if l.startswith("MISMATCH")]
    assert misses and all("vm-rerun-ssh" in l for l in misses)
    assert "1 mismatch," in result.stdout.splitlines()[-1]
    assert result.stdout.startswith(
        f"verify acme-metal: CircleCI Server 4.5, {engine},"
    )


@needs_root
@needs_tools
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupt_removes_the_test_bed(sig):
    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "verify", "profiles/aws-private-vpn.yaml"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    prefixes: set[str] = set()
    try:
        deadline = time.monotonic() + 20
        while len(_with_prefix(prefixes)) < 3 and time.monotonic() < deadline:
            prefixes |= _claimed_by(proc.pid)
            time.sleep(0.01)
        assert _with_prefix(prefixes), "the test bed never appeared"
        proc.send_signal(sig)
        err = proc.communicate(timeout=30)[1]
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130
    assert err.strip().endswith("verify: interrupted; the test bed was removed")
    assert not _with_prefix(prefixes)


def _claimed_by(pid: int) -> set[str]:
    """Prefixes of the beds whose lock names `pid` (the run that made them)."""
    from generator.verify import RUN_DIR

    found = set()
    try:
        names = os.listdir(RUN_DIR)
    except OSError:
        return found
    for name in names:
        try:
            if (RUN_DIR / name).read_text().strip() == str(pid):
                found.add(name.removesuffix(".lock"))
        except OSError:
            pass
    return found


def _rules_folders(prefixes: set[str]) -> list[str]:
    import glob
    import tempfile

    base = tempfile.gettempdir()
    return [f for p in prefixes for f in glob.glob(f"{base}/rulegen-verify-{p}-*")]


def _with_prefix(prefixes: set[str]) -> set[str]:
    return {n for n in our_namespaces() if n.split("-")[0] in prefixes}


@needs_root
@needs_tools
def test_a_signal_at_any_moment_removes_the_test_bed():
    """SIGINT, SIGTERM and SIGHUP at moments from the command's start to probing
    (bounded), some twice: never a traceback, never a namespace left, and the
    message says what happened. (Python's own start-up, before rulegen's code runs, is not ours.)
    """
    signals = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    delays = (0, 0.01, 0.03, 0.06, 0.1, 0.15, 0.2, 0.3, 0.45, 0.6, 0.8, 1.0, 1.3, 1.7)
    # A signal landing in this harness itself, before main() is entered, is not
    # rulegen's: it exits quietly; one that escapes main() still shows its traceback.
    child = (
        "import sys\nfrom generator.cli import main\n"
        "try:\n"
        "    sys.stderr.write('ready\\n'); sys.stderr.flush()\n"
        "    main(['verify', 'profiles/aws-public-ip.yaml'], prog_name='rulegen')\n"
        "except KeyboardInterrupt as exc:\n"
        "    if exc.__traceback__.tb_next is not None:\n"
        "        raise\n"
        "    sys.exit(130)\n"
    )
    seen_bed = 0
    for i, delay in enumerate(delays):
        sig = signals[i % 3]
        proc = subprocess.Popen(
            [sys.executable, "-c", child],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        prefixes: set[str] = set()
        try:
            assert proc.stderr.readline() == "ready\n"
            start = time.monotonic()
            while time.monotonic() - start < delay and proc.poll() is None:
                prefixes |= _claimed_by(proc.pid)
                time.sleep(0.002)
            proc.send_signal(sig)
            if i % 2:  # a second one while the bed is being removed
                time.sleep(0.03)
                if proc.poll() is None:
                    proc.send_signal(sig)
            deadline = time.monotonic() + 60
            while proc.poll() is None and time.monotonic() < deadline:
                prefixes |= _claimed_by(proc.pid)
                time.sleep(0.002)
            err = proc.communicate(timeout=30)[1]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
        label = f"{signal.Signals(sig).name} after {delay} s"
        assert "Traceback" not in err, (label, err)
        assert not _with_prefix(prefixes), label
        assert not _rules_folders(prefixes), label
        if prefixes:
            seen_bed += 1
            assert "the test bed was removed" in err or proc.returncode in (0, 2)
    assert seen_bed, "no signal landed while a test bed existed"


# --- each safety property of the host firewall, taken out, fails a named probe ------


def without_lines(files: dict, keep) -> dict:
    return {
        rel: (
            "".join(l for l in text.splitlines(True) if keep(l))
            if rel.endswith("tables")
            else text
        )
        for rel, text in files.items()
    }


GUARD_LINE = 'setsid sh "$here/apply.sh" --rollback-after'
SAFETY = {
    "nothing": (lambda files: files, None),
    "forward-path": (
        lambda files: without_lines(
            files, lambda l: not l.startswith("-A RULEGEN-FWD")
        ),
        "forward",
    ),
    "ip6tables": (
        lambda files: {r: t for r, t in files.items() if not r.endswith(".ip6tables")},
        "ipv6",
    ),
    "return-not-accept": (
        lambda files: {
            r: t.replace("-j RETURN", "-j ACCEPT") for r, t in files.items()
        },
        "operator",
    ),
    "host-essentials": (
        lambda files: without_lines(files, lambda l: "rulegen: host-" not in l),
        "essential",
    ),
    "rollback-guard": (
        lambda files: {r: t.replace(GUARD_LINE, "true & #") for r, t in files.items()},
        "rollback",
    ),
    # the rollback of old: a copy of the whole filter table, restored whole
    "rollback-only-rulegen": (
        lambda files: in_apply(
            files,
            ('ours_saved "$tool" >', '"$tool-save" -t filter >'),
            (
                'put_back "$tool" "$saved.$tool"',
                '"$tool-restore" --wait -T filter < "$saved.$tool"',
            ),
        ),
        "rollback",
    ),
}


def in_apply(files: dict, *replacements: tuple[str, str]) -> dict:
    """The files with apply.sh edited; each replaced text must be there."""
    text = files["apply.sh"]
    for old, new in replacements:
        assert old in text, old
        text = text.replace(old, new)
    return {**files, "apply.sh": text}


def nft_without(pattern: str):
    """nftables files with every match of `pattern` taken out."""
    import re

    return lambda files: {
        r: re.sub(pattern, "", t) if r.endswith(".nft") else t for r, t in files.items()
    }


def ipt_without(pattern: str):
    """iptables files with every match of `pattern` taken out."""
    import re

    return lambda files: {
        r: re.sub(pattern, "", t) if r.endswith("tables") else t
        for r, t in files.items()
    }


# The forward chain by direction: no DNAT drop, and the jobs chain for any interface.
SAFETY["forward-direction"] = (
    lambda files: ipt_without(r"-i (docker|br-)\+ ")(
        without_lines(files, lambda l: "rulegen: host-dnat" not in l)
    ),
    "dnat",
)
# Jobs inherit the host's egress: the host agents' flows allowed, no drops.
SAFETY["jobs-policy"] = (
    lambda files: without_lines(
        {
            r: t.replace('jobs-host-only" -j DROP', 'jobs-host-only" -j RETURN')
            for r, t in files.items()
        },
        lambda l: "rulegen: jobs-" not in l or "-j RETURN" in l,
    ),
    "jobs",
)
SAFETY["replies-only"] = (ipt_without(r" ! --syn"), "replies")


# nftables has no RETURN to get wrong: its accept ends only rulegen's own table.
SAFETY_NFT = {
    "nothing": SAFETY["nothing"],
    "forward-path": (nft_without(r"\n.*jump forward_v4.*"), "forward"),
    "ipv6-chains": (nft_without(r", ipv6 : jump \w+_v6"), "ipv6"),
    "host-essentials": (nft_without(r"\n.*rulegen: host-.*"), "essential"),
    "rollback-guard": SAFETY["rollback-guard"],
    "forward-direction": (
        nft_without(r'(\n.*ct status dnat drop.*|iifname "(docker|br-)\*" )'),
        "dnat",
    ),
    "jobs-policy": (
        lambda files: nft_without(r"\n.*drop comment \"rulegen: jobs-.*")(
            {
                r: t.replace('drop comment "rulegen: jobs-host-only"', "accept")
                for r, t in files.items()
            }
        ),
        "jobs",
    ),
    "replies-only": (
        nft_without(r" tcp flags & \(fin \| syn \| rst \| ack\) != syn"),
        "replies",
    ),
    # the whole ruleset saved and restored, not rulegen's table alone
    "rollback-only-its-table": (
        lambda files: in_apply(
            files,
            ("nft list table inet rulegen >", "nft list ruleset >"),
            (
                '{ echo "table inet rulegen {}"; echo "delete table inet rulegen";',
                "{ echo 'flush ruleset';",
            ),
        ),
        "rollback",
    ),
}
# Where each property shows (the rest: generic-baremetal): jobs that may reach
# 0.0.0.0/0 on 80 and 443, the DNS server in a role's subnet, a stateless ruleset.
SAFETY_CASE = {
    "forward-direction": "aws-private-vpn",
    "jobs-policy": "aws-private-vpn",
    "replies-only": "stateless",
}
# The named probes each new property must fail, at least.
SAFETY_TAGS = {
    "forward-direction": {"unopened"},
    "jobs-policy": {"metadata", "host-only", "internal"},
    "replies-only": {"syn"},
    "rollback-only-rulegen": {"others-kept"},
    "rollback-only-its-table": {"others-kept"},
}


@needs_root
@needs_tools
def test_cleanup_removes_what_a_killed_run_left_and_nothing_alive(tmp_path):
    from generator.verify import NamespaceBed, cleanup

    proc = subprocess.Popen(
        [sys.executable, "-m", "generator", "verify", "profiles/aws-public-ip.yaml"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    prefixes: set[str] = set()
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and len(_with_prefix(prefixes)) < 4:
            prefixes |= _claimed_by(proc.pid)
            time.sleep(0.01)
    finally:
        proc.kill()
        proc.wait()
    left = _with_prefix(prefixes)
    assert left, "the killed run left nothing to clean"
    prof, matrix = load_case("generic-baremetal")
    hosts = make_plan(matrix, prof.subnets).hosts[:2]
    folders = _rules_folders
    left_folders = set(folders(prefixes))
    assert left_folders, "the killed run left no rules folder"
    with NamespaceBed(hosts) as alive:
        mine = prefixes | {alive.prefix}
        removed, kept = cleanup(only=mine)
        assert set(removed) == left | left_folders and not folders(prefixes)
        assert set(kept) == set(alive.namespaces) and _with_prefix({alive.prefix})
    assert not _with_prefix(mine)


def test_cleanup_knows_only_its_own_names():
    from generator.verify import BED_NAME

    assert BED_NAME.match("rgv0a1b2c-br") and BED_NAME.match("rgv0a1b2c-h12")
    for other in (
        "rgv0a1b2c",
        "rgvzzzzzz-br",
        "rgv0a1b2c-x1",
        "mynet",
        "rgv0a1b2c-h1x",
    ):
        assert not BED_NAME.match(other)


def test_verify_without_a_profile_or_cleanup_is_an_error():
    result = CliRunner().invoke(main, ["verify"])
    assert result.exit_code == 1 and "needs a PROFILE" in result.stderr


@pytest.mark.parametrize(
    "engine, taken_out",
    [("iptables", name) for name in SAFETY]
    + [("nftables", name) for name in SAFETY_NFT],
)
@needs_root
@needs_tools
def test_taking_out_a_safety_property_fails_its_probes(engine, taken_out, tmp_path):
    change, kind = (SAFETY if engine == "iptables" else SAFETY_NFT)[taken_out]
    prof, matrix = load_case(SAFETY_CASE.get(taken_out, "generic-baremetal"))
    test_plan = make_plan(matrix, prof.subnets, prof)
    folder = tmp_path / "rules"
    folder.mkdir()
    files = ruleset(matrix, prof, engine=engine)
    assert change(files) != files or kind is None
    assert GUARD_LINE in files["apply.sh"]
    write_files(folder, change(files))
    with NamespaceBed(test_plan.hosts) as bed:
        bed.load(folder)
        observed = observe_with_retry(bed, test_plan.probes, matrix)
        extra, seen = rollback(
            bed, test_plan, matrix, prof, tmp_path, change, engine=engine
        )
    assert [p.tag for p in extra] == ["cut", "restored", "others-kept"]
    observed.update(seen)
    plan = ProbePlan(test_plan.hosts, test_plan.probes + extra, test_plan.unlisted)
    outcome = Outcome(matrix, plan, observed, 0.0)
    if kind is None:
        assert outcome.ok, report(outcome)
    else:
        assert kind in {p.kind for p in outcome.mismatches}, report(outcome)
        tags = {p.tag for p in outcome.mismatches if p.kind == kind}
        assert SAFETY_TAGS.get(taken_out, set()) <= tags, report(outcome)


@needs_root
@needs_tools
def test_both_engines_answer_every_probe_identically(case, tmp_path):
    """iptables and nftables are two layouts of one model: same packets, same answers."""
    prof, matrix = load_case(case)
    test_plan = make_plan(matrix, prof.subnets, prof)
    seen = {}
    with NamespaceBed(test_plan.hosts) as bed:
        for engine in ENGINES:
            folder = tmp_path / engine
            folder.mkdir()
            write_files(folder, ruleset(matrix, prof, engine=engine))
            bed.load(folder)
            seen[engine] = observe_with_retry(bed, test_plan.probes, matrix)
            for host in test_plan.hosts:
                if host.role:
                    subprocess.run(
                        bed.apply(host, "--remove"), cwd=folder, check=True, timeout=60
                    )
    differ = [
        p.text()
        for p in test_plan.probes
        if (seen["iptables"].get(p.id) == "connected")
        != (seen["nftables"].get(p.id) == "connected")
    ]
    assert not differ
    outcome = Outcome(matrix, test_plan, seen["nftables"], 0.0)
    assert outcome.ok, report(outcome)
