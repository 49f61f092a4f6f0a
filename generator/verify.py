"""verify: load the generated iptables rules into a test bed of network namespaces
and send real packets, to prove the flows that must connect do and the rest do not.

The test bed: one namespace per host, each joined by a veth pair to a bridge that lives
in a namespace of its own (never the host's). Every host has one /32 address and an
on-link default route, so every address is reachable on the one segment whatever
subnet it belongs to. Role hosts (two per compute role, so that Nomad-to-Nomad and
VM-to-VM can be tried) get an address from the role's subnet and load their role's
rules with the generated apply.sh, as an operator would. Peer hosts (external, VCS,
DNS, admin, ...) get an address from the peer's own CIDRs and no firewall. A peer of
0.0.0.0/0 needs a stand-in: 198.18.0.10 (198.18.0.0/15 is the benchmarking range,
never routed), or the .10 of the next /24 there if the profile uses it, so that
only an "anywhere" rule can let it through. One agent per namespace
(generator.netprobe) serves the host's ports and runs its probes in parallel; a
probe gives up after 0.3 s, and a surprise is tried once more at 1 s. IPv6 rules
are not probed.

What is probed (expectations come from the rules and the page, not from `explain`):
- must connect: every rule of the matrix, from a host inside its peer (the low,
  middle and high port of a range; protocol all: a TCP and a UDP probe on a port no
  rule names); UDP must get an answer;
- must fail: between two hosts of an isolated role (Nomad clients, external VMs) on
  every port they serve; a port no rule names between every pair of roles not joined
  by an all-protocol rule; the external host to every port a role serves that no
  ingress rule publishes to it.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import selectors
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from .matrix import ROLES, Matrix, Rule

STAND_IN_RANGE = ipaddress.ip_network("198.18.0.0/15")
ISOLATED = ("nomad_clients", "external_vms")  # the page: no traffic between two of them
HOSTS_PER_ROLE = {
    "load_balancer": 1,
    "kubernetes_nodes": 2,
    "nomad_clients": 2,
    "external_vms": 2,
}
UNLISTED_CANDIDATES = (9, 7, 13, 19, 37, 79, 119, 9999, 12345, 23456)
TIMEOUT = 0.3  # a probe on one bridge answers in well under a millisecond
RETRY_TIMEOUT = 1.0  # a surprise is tried once more, slowly, before it is reported
READY_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60


class VerifyError(Exception):
    """The test bed cannot be built or run; str() says why."""


@dataclass
class Host:
    key: str
    address: ipaddress.IPv4Address
    role: str | None = None
    labels: list[str] = field(default_factory=list)
    stand_in: bool = False
    tcp: set = field(default_factory=set)
    udp: set = field(default_factory=set)
    ns: str = ""

    @property
    def title(self) -> str:
        return self.key if self.role else "+".join(self.labels)


@dataclass
class Probe:
    src: Host
    dst: Host
    protocol: str
    port: int
    expect: bool
    why: list[str] = field(default_factory=list)

    @property
    def id(self) -> str:
        return f"{self.src.key}>{self.dst.key}>{self.protocol}/{self.port}"

    def text(self) -> str:
        return (
            f"{self.protocol}/{self.port} {self.src.title} ({self.src.address})"
            f" -> {self.dst.title} ({self.dst.address})"
        )


@dataclass
class ProbePlan:
    hosts: list[Host]
    probes: list[Probe]
    unlisted: int
    skipped: list[str] = field(default_factory=list)


# --- the plan: hosts and probes, a pure function of the matrix -------------------


def _v4(cidrs) -> list[ipaddress.IPv4Network]:
    nets = [ipaddress.ip_network(c, strict=False) for c in cidrs]
    return [n for n in nets if n.version == 4]


def _pick(net: ipaddress.IPv4Network, used: set, start: int = 10):
    """A host address inside `net` that is not taken yet (None if all are)."""
    size = net.num_addresses
    if size <= 4:
        offsets = range(size)
    else:
        offsets = range(start if size > start + 2 else 1, size - 1)
    for offset in offsets:
        address = net[offset]
        if address not in used:
            return address
    return None


def sample_ports(ports: tuple[int, int] | None, unlisted: int) -> list[int]:
    if ports is None:
        return [unlisted]
    lo, hi = ports
    return [lo] if lo == hi else sorted({lo, (lo + hi) // 2, hi})


def unlisted_port(matrix: Matrix) -> int:
    named = [r.ports for r in matrix.rules if r.ports and not r.is_return]
    named += [r.source_ports for r in matrix.rules if r.source_ports]
    for port in UNLISTED_CANDIDATES:
        if not any(lo <= port <= hi for lo, hi in named):
            return port
    raise VerifyError("every candidate port is named by a rule; none left to probe")


def stand_in(profile_nets: list) -> ipaddress.IPv4Address:
    for block in STAND_IN_RANGE.subnets(new_prefix=24):
        address = block[10]
        if not any(address in n for n in profile_nets if n.prefixlen):
            return address
    raise VerifyError("no stand-in address for 0.0.0.0/0 outside the profile's")


def make_plan(matrix: Matrix, subnets: dict) -> ProbePlan:
    unlisted = unlisted_port(matrix)
    used: set = set()
    hosts: list[Host] = []
    role_hosts: dict[str, list[Host]] = {}
    skipped: list[str] = []
    profile_nets = [n for nets in subnets.values() for n in _v4(nets)]
    profile_nets += [n for r in matrix.rules for n in _v4(r.peer.cidrs)]

    # Single-address peers keep their address: role hosts go around them.
    used |= {n[0] for r in matrix.rules for n in _v4(r.peer.cidrs) if n.prefixlen == 32}
    for role in matrix.roles():
        nets = _v4(subnets.get(role, ()))
        if not nets:
            raise VerifyError(
                f"verify places a host of {role} in its subnet, and network.subnets.{role}"
                " has no IPv4 network"
            )
        for i in range(HOSTS_PER_ROLE[role]):
            address = _pick(nets[0], used)
            if address is None:
                raise VerifyError(f"no free address for a {role} host in {nets[0]}")
            used.add(address)
            host = Host(f"{role}#{i + 1}", address, role=role)
            hosts.append(host)
            role_hosts.setdefault(role, []).append(host)
        if HOSTS_PER_ROLE[role] == 1:
            role_hosts[role][0].key = role

    peer_host: dict[tuple, Host] = {}
    by_address: dict = {}
    anywhere = stand_in(profile_nets)
    for rule in matrix.rules:
        if rule.peer.role:
            continue
        nets = _v4(rule.peer.cidrs)
        if not nets:
            note = f"{rule.name}: no IPv4 address in its peer; not probed"
            if note not in skipped:
                skipped.append(note)
            continue
        key = tuple(nets)
        host = peer_host.get(key)
        if host is None:
            first = nets[0]
            if first.prefixlen == 0:
                address = anywhere
            elif first.num_addresses == 1:
                address = first[0]
            else:
                address = _pick(first, used) or first[0]
            host = by_address.get(address)
            if host is None:
                host = Host("", address, stand_in=first.prefixlen == 0)
                used.add(address)
                by_address[address] = host
                hosts.append(host)
            peer_host[key] = host
        name = rule.peer.name or "cidrs"
        if name not in host.labels:
            host.labels.append(name)
    for i, host in enumerate(h for h in hosts if not h.role):
        host.key = f"peer{i + 1}:{'+'.join(host.labels)}"

    probes: dict[tuple, Probe] = {}

    def add(src, dst, protocol, port, expect, why) -> None:
        key = (src.key, dst.key, protocol, port)
        probe = probes.get(key)
        if probe is None:
            probes[key] = Probe(src, dst, protocol, port, expect, [why])
            return
        if probe.expect != expect:
            raise VerifyError(
                f"the plan both requires and forbids {probe.text()}:"
                f" {'; '.join(probe.why)} / {why}"
            )
        if why not in probe.why:
            probe.why.append(why)

    def representative(rule: Rule, own: Host) -> Host | None:
        if rule.peer.role:
            others = [h for h in role_hosts.get(rule.peer.role, ()) if h is not own]
            return others[0] if others else None
        nets = _v4(rule.peer.cidrs)
        return peer_host.get(tuple(nets)) if nets else None

    # Must connect: every rule, from (or to) a host inside its peer.
    for rule in matrix.rules:
        if rule.is_return:
            continue  # a stateless reply is proved by its request's probe
        own = role_hosts[rule.role][0]
        other = representative(rule, own)
        if other is None:
            continue
        src, dst = (other, own) if rule.direction == "ingress" else (own, other)
        protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
        why = f"flow {rule.flow} ({rule.name}{_replies(matrix, rule)})"
        for protocol in protocols:
            for port in sample_ports(rule.ports, unlisted):
                add(src, dst, protocol, port, True, why)

    # What each role serves: the ports its ingress rules open (sampled).
    serves: dict[str, set] = {}
    for role in role_hosts:
        found = {("tcp", unlisted)}
        for rule in matrix.for_role(role, "ingress"):
            if rule.is_return:
                continue
            protocols = ("tcp", "udp") if rule.protocol == "all" else (rule.protocol,)
            for protocol in protocols:
                found |= {(protocol, p) for p in sample_ports(rule.ports, unlisted)}
        serves[role] = found

    # Must fail: two hosts of an isolated role, on everything they serve.
    for role in ISOLATED:
        pair = role_hosts.get(role, [])
        if len(pair) < 2:
            continue
        for src, dst in ((pair[0], pair[1]), (pair[1], pair[0])):
            for protocol, port in sorted(serves[role]):
                add(src, dst, protocol, port, False, f"no traffic between two {role}")

    # Must fail: a port no rule names, between roles no all-protocol rule joins.
    def joined(a: str, b: str) -> bool:
        out = any(
            r.protocol == "all" and r.peer.role == b
            for r in matrix.for_role(a, "egress")
        )
        into = any(
            r.protocol == "all" and r.peer.role == a
            for r in matrix.for_role(b, "ingress")
        )
        return out or into

    role_list = [h for h in hosts if h.role]
    for src in role_list:
        for dst in role_list:
            if src is dst or src.role == dst.role or joined(src.role, dst.role):
                continue
            add(src, dst, "tcp", unlisted, False, f"port {unlisted} is in no rule")

    # Must fail: the external host, to whatever a role serves but does not publish to it.
    externals = [
        h for h in hosts if any("external" in l.split("_and_") for l in h.labels)
    ]
    for src in externals:
        for dst in role_list:
            for protocol, port in sorted(serves[dst.role]):
                if not _published(
                    matrix, dst.role, src.address, protocol, port, subnets
                ):
                    add(src, dst, protocol, port, False, "external, not published")

    ordered = sorted(
        probes.values(),
        key=lambda p: (hosts.index(p.src), hosts.index(p.dst), p.protocol, p.port),
    )
    for probe in ordered:
        (probe.dst.tcp if probe.protocol == "tcp" else probe.dst.udp).add(probe.port)
    return ProbePlan(hosts, ordered, unlisted, skipped)


def _replies(matrix: Matrix, rule: Rule) -> str:
    """The stateless return rule that lets the rule's replies back, if any."""
    back = "ingress" if rule.direction == "egress" else "egress"
    names = [
        r.name
        for r in matrix.for_role(rule.role, back)
        if r.is_return
        and r.source_ports == rule.ports
        and r.peer == rule.peer
        and r.protocol == rule.protocol
    ]
    return "".join(f", reply: {name}" for name in names)


def _published(matrix, role, address, protocol, port, subnets) -> bool:
    """Does an ingress rule of the role let this address reach the port?"""
    for rule in matrix.for_role(role, "ingress"):
        if rule.is_return or rule.protocol not in ("all", protocol):
            continue
        if rule.ports and not rule.ports[0] <= port <= rule.ports[1]:
            continue
        cidrs = subnets.get(rule.peer.role, ()) if rule.peer.role else rule.peer.cidrs
        if any(address in n for n in _v4(cidrs)):
            return True
    return False


# --- the test bed ---------------------------------------------------------------


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **kwargs
    )
    if result.returncode != 0:
        raise VerifyError(f"{' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result


def preflight(needs_ipset: bool = False) -> None:
    if sys.platform != "linux":
        raise VerifyError("verify needs Linux network namespaces")
    if os.geteuid() != 0:
        raise VerifyError("verify needs root: it creates network namespaces")
    tools = ["ip", "iptables", "iptables-restore"] + (["ipset"] if needs_ipset else [])
    missing = [t for t in tools if not shutil.which(t)]
    if missing:
        raise VerifyError(
            f"verify needs {', '.join(missing)}: apt-get install iproute2 iptables ipset"
        )


class NamespaceBed:
    """Namespaces, bridge and agents for a plan's hosts; removed on exit, always."""

    def __init__(self, hosts: list[Host], prefix: str | None = None):
        self.hosts = hosts
        self.prefix = prefix or f"rgv{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}-br"
        self.namespaces: list[str] = []
        self.agents: dict[str, subprocess.Popen] = {}

    def __enter__(self) -> NamespaceBed:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _netns(self, name: str) -> None:
        _run(["ip", "netns", "add", name])
        self.namespaces.append(name)

    def start(self) -> None:
        self._netns(self.bridge)
        _run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts):
            host.ns = f"{self.prefix}-h{i}"
            self._netns(host.ns)
            port = f"p{i}"
            _run(
                ["ip", "link", "add", "eth0", "netns", host.ns, "type", "veth"]
                + ["peer", "name", port, "netns", self.bridge]
            )
            batch = (
                f"addr add {host.address}/32 dev eth0\n"
                "link set lo up\nlink set eth0 up\n"
                "route add default dev eth0\n"
            )
            _run(["ip", "-n", host.ns, "-batch", "-"], input=batch)
            _run(["ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up"])
        self._start_agents()

    def _start_agents(self) -> None:
        """One agent per namespace: it serves the host's ports and runs its probes."""
        sel = selectors.DefaultSelector()
        for host in self.hosts:
            args = ["ip", "netns", "exec", host.ns, sys.executable, "-m"]
            args += ["generator.netprobe", "serve"]
            args += ["--tcp", ",".join(map(str, sorted(host.tcp)))]
            args += ["--udp", ",".join(map(str, sorted(host.udp)))]
            proc = subprocess.Popen(
                args,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=Path(__file__).resolve().parent.parent,
                text=True,
            )
            self.agents[host.key] = proc
            sel.register(proc.stdout, selectors.EVENT_READ, host)
        self._answers(sel, READY_TIMEOUT, "start", lambda host, line: line == "ready")

    def _answers(self, sel, limit: float, what: str, accept) -> dict:
        """One line from each registered agent within `limit` seconds."""
        lines = {}
        deadline = time.monotonic() + limit
        while sel.get_map():
            left = deadline - time.monotonic()
            events = sel.select(timeout=left) if left > 0 else []
            if not events:
                raise VerifyError(f"agents did not {what} in time")
            for key, _ in events:
                host = key.data
                line = key.fileobj.readline().strip()
                if not accept(host, line):
                    proc = self.agents[host.key]
                    proc.kill()
                    error = proc.stderr.read().strip().splitlines()
                    raise VerifyError(
                        f"agent on {host.title} failed: {error[-1] if error else line}"
                    )
                sel.unregister(key.fileobj)
                lines[host.key] = line
        return lines

    def load(self, folder: Path, roles: list[str] | None = None) -> None:
        """Run the generated apply.sh in every host of the given roles (default: all)."""
        for host in self.hosts:
            if host.role and (roles is None or host.role in roles):
                args = [
                    "ip",
                    "netns",
                    "exec",
                    host.ns,
                    "sh",
                    "apply.sh",
                    "--yes",
                    host.role,
                ]
                _run(args, cwd=folder)

    def observe(
        self,
        probes: list[Probe],
        timeout: float = TIMEOUT,
        client_ports: tuple[int, int] | None = None,
        reserved: str = "",
    ) -> dict[str, str]:
        """Run the probes, every source at once; probe id -> observed outcome."""
        by_source: dict[str, list[Probe]] = {}
        for probe in probes:
            by_source.setdefault(probe.src.key, []).append(probe)
        sel = selectors.DefaultSelector()
        hosts = {h.key: h for h in self.hosts}
        for key, items in by_source.items():
            job = {
                "timeout": timeout,
                "client_ports": list(client_ports) if client_ports else None,
                "reserved": reserved,
                "probes": [
                    {
                        "id": p.id,
                        "protocol": p.protocol,
                        "address": str(p.dst.address),
                        "port": p.port,
                    }
                    for p in items
                ],
            }
            agent = self.agents[key]
            agent.stdin.write(json.dumps(job) + "\n")
            agent.stdin.flush()
            sel.register(agent.stdout, selectors.EVENT_READ, hosts[key])
        rounds = (
            max(len(items) for items in by_source.values()) // 64 + 1 if probes else 0
        )
        answers = self._answers(
            sel, timeout * rounds * 2 + 10, "answer", lambda host, line: line[:1] == "{"
        )
        results: dict[str, str] = {}
        for line in answers.values():
            results.update(json.loads(line))
        return results

    def close(self) -> None:
        """Stop the agents and delete every namespace of this bed; Ctrl-C waits."""
        old = signal.signal(signal.SIGINT, signal.SIG_IGN) if _main_thread() else None
        try:
            self._stop_agents()
            # By prefix, so that one created just before an interrupt goes too; an
            # `ip netns add` killed by the interrupt may still finish a moment later,
            # so look again a few times (bounded).
            names = set(self.namespaces)
            for attempt in range(5):
                names |= self._left_behind()
                if not names:
                    break
                for name in sorted(names, reverse=True):
                    subprocess.run(
                        ["ip", "netns", "delete", name],
                        capture_output=True,
                        timeout=30,
                    )
                names = set()
                time.sleep(0.1 * (attempt + 1))
            self.namespaces = []
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)

    def _left_behind(self) -> set[str]:
        try:
            return {
                n for n in os.listdir("/run/netns") if n.startswith(self.prefix + "-")
            }
        except OSError:
            return set()

    def _stop_agents(self) -> None:
        agents = list(self.agents.values())
        for proc in agents:  # all at once: each takes a moment to notice
            try:
                proc.stdin.close()
            except (OSError, ValueError):
                pass
        for proc in agents:
            try:
                proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)
            for stream in (proc.stdout, proc.stderr):
                if stream:
                    stream.close()
        self.agents = {}


# --- one run --------------------------------------------------------------------


@dataclass
class Outcome:
    matrix: Matrix
    plan: ProbePlan
    observed: dict[str, str]
    seconds: float
    dropped: list[Rule] = field(default_factory=list)

    @property
    def mismatches(self) -> list[Probe]:
        return [p for p in self.plan.probes if self.passed(p) != p.expect]

    def passed(self, probe: Probe) -> bool:
        return self.observed.get(probe.id) == "connected"

    @property
    def ok(self) -> bool:
        return not self.mismatches


def ruleset(matrix: Matrix, profile, drop: list[Rule] = ()) -> dict[str, str]:
    """The iptables files `rulegen generate` writes, less any dropped rule."""
    from dataclasses import replace

    from .emitters import TARGETS
    from .pipeline import files_for

    if drop:
        matrix = replace(matrix, rules=tuple(r for r in matrix.rules if r not in drop))
    files = files_for(profile, matrix, [TARGETS["iptables"]])
    return {path.split("/", 1)[1]: text for path, text in files.items()}


def write_files(folder: Path, files: dict[str, str]) -> None:
    for rel, text in files.items():
        (folder / rel).write_text(text)


def client_ports(matrix: Matrix) -> tuple[tuple[int, int] | None, str]:
    """Stateless rulesets let replies reach the ephemeral range: use it, minus listed ports."""
    if matrix.stateful:
        return None, ""
    ephemeral = next((r.ports for r in matrix.rules if r.is_return), None)
    listed = sorted(
        {r.ports for r in matrix.rules if r.ports and not r.is_return}
        | {r.source_ports for r in matrix.rules if r.source_ports}
    )
    reserved = ",".join(f"{lo}-{hi}" if lo != hi else str(lo) for lo, hi in listed)
    return ephemeral, reserved


def find_rules(matrix: Matrix, names) -> list[Rule]:
    import difflib

    by_name = {r.name: r for r in matrix.rules}
    found = []
    for name in names:
        if name not in by_name:
            guess = difflib.get_close_matches(name, list(by_name), n=3)
            hint = f"; did you mean {', '.join(guess)}?" if guess else ""
            raise VerifyError(f"no rule named {name!r} in the matrix{hint}")
        found.append(by_name[name])
    return found


def observe_with_retry(
    bed: NamespaceBed, probes: list[Probe], matrix: Matrix, retry: float = RETRY_TIMEOUT
) -> dict:
    """Observe; a surprise is tried once more with a longer timeout before it counts."""
    ports, reserved = client_ports(matrix)
    observed = bed.observe(probes, TIMEOUT, ports, reserved)
    surprises = [p for p in probes if (observed.get(p.id) == "connected") != p.expect]
    if surprises:
        observed.update(bed.observe(surprises, retry, ports, reserved))
    return observed


def run(matrix: Matrix, profile, drop_names=()) -> Outcome:
    """Build the bed, load the (possibly thinned) rules, probe, and clean up."""
    started = time.monotonic()
    dropped = find_rules(matrix, drop_names)
    plan = make_plan(matrix, profile.subnets)
    files = ruleset(matrix, profile, dropped)
    preflight(needs_ipset=any(rel.endswith(".ipset") for rel in files))
    with _signals_raise(), tempfile.TemporaryDirectory(prefix="rulegen-verify-") as tmp:
        folder = Path(tmp)
        write_files(folder, files)
        with NamespaceBed(plan.hosts) as bed:
            bed.load(folder)
            observed = observe_with_retry(bed, plan.probes, matrix)
    return Outcome(matrix, plan, observed, time.monotonic() - started, dropped)


class _signals_raise:
    """SIGTERM and SIGHUP unwind like Ctrl-C, so every finally block still runs."""

    SIGNALS = (signal.SIGTERM, signal.SIGHUP)

    def __enter__(self):
        self.old = {}
        if _main_thread():
            for sig in self.SIGNALS:
                self.old[sig] = signal.signal(sig, self._raise)
        return self

    def __exit__(self, *exc) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)

    @staticmethod
    def _raise(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --- report ---------------------------------------------------------------------


def report(outcome: Outcome, verbose: bool = False) -> str:
    plan, matrix = outcome.plan, outcome.matrix
    lines = [
        f"verify {matrix.profile}: CircleCI Server {matrix.server_version},"
        f" iptables, {'stateful' if matrix.stateful else 'stateless'}"
    ]
    for rule in outcome.dropped:
        lines.append(f"dropped from the loaded rules: {rule.name}")
    lines.append("hosts:")
    for host in plan.hosts:
        what = host.role or ", ".join(host.labels)
        note = "  (stand-in for 0.0.0.0/0)" if host.stand_in else ""
        lines.append(f"  {host.key:<24} {str(host.address):<16} {what}{note}")
    lines += _grid(outcome)
    for note in plan.skipped:
        lines.append(f"skipped: {note}")
    for probe in plan.probes:
        observed = outcome.observed.get(probe.id, "not run")
        good = outcome.passed(probe) == probe.expect
        if good and not verbose:
            continue
        lines.append(
            f"{'ok      ' if good else 'MISMATCH'} {probe.text()}:"
            f" expected {'connect' if probe.expect else 'blocked'}, observed {observed};"
            f" {'; '.join(probe.why)}"
        )
    must = sum(p.expect for p in plan.probes)
    bad = len(outcome.mismatches)
    lines.append(
        f"{matrix.profile}: {len(plan.probes)} probes ({must} must connect,"
        f" {len(plan.probes) - must} must fail), {len(plan.probes) - bad} as expected,"
        f" {bad} mismatch{'es' if bad != 1 else ''}, {outcome.seconds:.1f} s"
    )
    return "\n".join(lines) + "\n"


def _grid(outcome: Outcome) -> list[str]:
    """Rows: sources; columns: destinations; cells: expected/observed connects of n."""
    hosts = outcome.plan.hosts
    cells: dict[tuple, list[int]] = {}
    for probe in outcome.plan.probes:
        cell = cells.setdefault((probe.src.key, probe.dst.key), [0, 0, 0, 0])
        cell[0] += probe.expect
        cell[1] += outcome.passed(probe)
        cell[2] += 1
        cell[3] += outcome.passed(probe) != probe.expect
    names = [f"h{i}" for i in range(len(hosts))]
    width = 9
    out = [
        "expected/observed connections of n probes, per source (row) and destination;"
        " ! marks a difference:",
        " " * 6 + "".join(f"{n:>{width}}" for n in names),
    ]
    for i, src in enumerate(hosts):
        row = f"{names[i]:<6}"
        for dst in hosts:
            cell = cells.get((src.key, dst.key))
            text = "." if not cell else f"{cell[0]}/{cell[1]}/{cell[2]}"
            if cell and cell[3]:
                text += "!"
            row += f"{text:>{width}}"
        out.append(row + f"  {src.key}")
    return out
