"""The test bed: one network namespace per host, each joined by a veth link to a bridge in
a namespace of its own (never the host's); each host's addresses (one /32 and an on-link
default route, an IPv6 /64 when the plan gives one); a container behind its host (a
bridge, MASQUERADE out, DNAT in); one netprobe agent per namespace that serves the
host's ports and runs its probes; the generated apply.sh loaded as an operator would,
then the operator's own DROPs; and the removal of all of it, always.

Also what names a bed: namespaces <prefix>-br and <prefix>-h<N>, and the lock in
RUN_DIR that a live run holds (`verify --cleanup` leaves such a bed alone).
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
import selectors
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .model import Host, Probe, VerifyError
from .signals import _deferred_signals

TIMEOUT = 0.3  # a probe on one bridge answers in well under a millisecond
READY_TIMEOUT = 15.0
COMMAND_TIMEOUT = 60
# Every namespace of a bed is named <prefix>-br or <prefix>-h<N>, the prefix being
# rgv and 6 hex digits; a live run holds RUN_DIR/<prefix>.lock (cleanup skips it).
BED_NAME = re.compile(r"^(rgv[0-9a-f]{6})-(?:br|h[0-9]+)$")
RUN_DIR = Path("/run/rulegen")
TMP_PREFIX = "rulegen-verify-"  # + the bed's prefix: the rules a run loads


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=COMMAND_TIMEOUT, **kwargs
    )
    if result.returncode != 0:
        raise VerifyError(f"{' '.join(args)}: {result.stderr.strip() or 'failed'}")
    return result


class NamespaceBed:
    """Namespaces, bridge and agents for a plan's hosts; removed on exit, always."""

    def __init__(self, hosts: list[Host], prefix: str | None = None):
        self.hosts = hosts
        self.prefix = prefix or f"rgv{secrets.token_hex(3)}"
        self.bridge = f"{self.prefix}-br"
        self.namespaces: list[str] = []
        self.agents: dict[str, subprocess.Popen] = {}
        self.claim: int | None = None
        self.started = False
        self.release_on_close = True  # unless the caller claimed the prefix first
        self.state_root = ""

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
        with _deferred_signals():
            _run(["ip", "netns", "add", name])
            self.namespaces.append(name)

    def _claim(self) -> None:
        """Hold a lock named by the prefix while the bed lives: `verify --cleanup`
        leaves a bed alone while its run holds the lock."""
        import fcntl

        if self.claim is not None:
            return
        with _deferred_signals():
            RUN_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(RUN_DIR / f"{self.prefix}.lock", os.O_RDWR | os.O_CREAT, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
            self.claim = fd

    def start(self) -> None:
        self.started = True
        self.release_on_close = self.claim is None
        self._claim()
        self._netns(self.bridge)
        _run(["ip", "-n", self.bridge, "link", "add", "br0", "type", "bridge"])
        _run(["ip", "-n", self.bridge, "link", "set", "br0", "up"])
        for i, host in enumerate(self.hosts):
            host.ns = f"{self.prefix}-h{i}"
            self._netns(host.ns)
            if host.parent:
                self._container(host)
                continue
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
            if host.address6:
                batch += f"addr add {host.address6}/64 dev eth0 nodad\n"
            if host.public:
                batch += f"addr add {host.public}/32 dev eth0\n"
            for address, via, src in host.routes + self._pod_routes(host):
                batch += f"route add {address} " + (
                    f"via {via} dev eth0 onlink\n" if via else f"dev eth0 src {src}\n"
                )
            _run(["ip", "-n", host.ns, "-batch", "-"], input=batch)
            _run(["ip", "-n", self.bridge, "link", "set", port, "master", "br0", "up"])
            if host.hop:
                self._hop(host)
        self._start_agents()

    def _pod_routes(self, host: Host) -> list:
        """Every other host reaches a pod's own range through the pod's node."""
        return [
            (
                ipaddress.ip_network(f"{pod.address}/24", strict=False),
                pod.parent.address,
                None,
            )
            for pod in self.hosts
            if pod.parent and not pod.masquerade and pod.parent is not host
        ]

    def _hop(self, host: Host) -> None:
        """A translation on the way: a NAT gateway's SNAT, a balancer's DNAT (and its
        SNAT when it does not keep the client's address). It forwards, and never
        redirects a host past itself."""
        inside = ["ip", "netns", "exec", host.ns]
        for key in (
            "net.ipv4.ip_forward=1",
            "net.ipv4.conf.all.send_redirects=0",
            "net.ipv4.conf.eth0.send_redirects=0",
        ):
            _run(inside + ["sysctl", "-qw", key])
        nat = [
            f"-t nat -A POSTROUTING -s {net} -o eth0 -j SNAT --to-source {host.address}"
            for net in host.snat_from
        ]
        for port, to, to_port in host.dnat:
            nat.append(
                f"-t nat -A PREROUTING -d {host.address} -p tcp --dport {port}"
                f" -j DNAT --to-destination {to}:{to_port}"
            )
            if host.snat_to:
                nat.append(
                    f"-t nat -A POSTROUTING -d {to} -p tcp --dport {to_port}"
                    f" -j SNAT --to-source {host.snat_to}"
                )
        for rule in nat:
            _run(inside + ["iptables", "--wait"] + rule.split())

    def _container(self, box: Host) -> None:
        """A container behind its host: a bridge there, MASQUERADE out, DNAT in."""
        host = box.parent
        gateway = box.address - 1
        net = ipaddress.ip_network(f"{box.address}/24", strict=False)
        _run(
            ["ip", "link", "add", "eth0", "netns", box.ns, "type", "veth"]
            + ["peer", "name", "ctr0", "netns", host.ns]
        )
        _run(
            ["ip", "-n", host.ns, "-batch", "-"],
            input=(
                f"link add {box.bridge} type bridge\n"
                f"addr add {gateway}/24 dev {box.bridge}\n"
                f"link set {box.bridge} up\nlink set ctr0 master {box.bridge} up\n"
            ),
        )
        _run(
            ["ip", "-n", box.ns, "-batch", "-"],
            input=(
                f"addr add {box.address}/24 dev eth0\n"
                "link set lo up\nlink set eth0 up\n"
                f"route add default via {gateway}\n"
            ),
        )
        nat = (
            [f"-t nat -A POSTROUTING -s {net} -o eth0 -j MASQUERADE"]
            if box.masquerade
            else []
        )
        to = f":{box.container_port}" if box.container_port else ""
        for lo, hi in box.published:
            nat.append(
                f"-t nat -A PREROUTING -i eth0 -p tcp --dport {lo}:{hi}"
                f" -j DNAT --to-destination {box.address}{to}"
            )
        inside = ["ip", "netns", "exec", host.ns]
        _run(inside + ["sysctl", "-qw", "net.ipv4.ip_forward=1"])
        for rule in nat:
            _run(inside + ["iptables", "--wait"] + rule.split())

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
                cwd=Path(__file__).resolve().parents[2],  # where generator/ is
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

    def state(self, host: Host) -> str:
        """apply.sh's state folder (its rollback backups) for one host."""
        if not self.state_root:
            self.state_root = tempfile.mkdtemp(
                prefix=f"{TMP_PREFIX}{self.prefix}-state-"
            )
        return os.path.join(self.state_root, host.ns)

    def apply(self, host: Host, *args: str) -> list[str]:
        """apply.sh as root on `host` would run it, with the host's own state folder."""
        env = ["env", f"RULEGEN_STATE={self.state(host)}"]
        return [
            "ip",
            "netns",
            "exec",
            host.ns,
            *env,
            "sh",
            "apply.sh",
            *args,
            host.role,
        ]

    def load(self, folder: Path, roles: list[str] | None = None) -> None:
        """Run the generated apply.sh in every host of the given roles (default: all),
        then add the operator's own rules after rulegen's jump."""
        for host in self.hosts:
            if host.role and (roles is None or host.role in roles):
                _run(self.apply(host, "--yes"), cwd=folder)
                for source, port in host.drops:
                    self.drop(host, source, port)

    def drop(self, host: Host, source, port: int) -> None:
        """The operator's own DROP on `host`, appended to INPUT (after rulegen's jump)."""
        _run(
            ["ip", "netns", "exec", host.ns, "iptables", "--wait", "-A", "INPUT"]
            + ["-s", str(source), "-p", "tcp", "--dport", str(port), "-j", "DROP"]
        )

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
                        "address": p.target,
                        "port": p.port,
                        **({"sport": p.sport} if p.sport else {}),
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
        """Stop the agents and delete every namespace of this bed; signals wait."""
        with _deferred_signals():
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
            if self.state_root:
                shutil.rmtree(self.state_root, ignore_errors=True)
                self.state_root = ""
            if self.release_on_close:
                self.release()

    def release(self) -> None:
        """Give up the bed's lock (after the bed and its files are gone)."""
        if self.claim is not None:
            if not self._left_behind():
                (RUN_DIR / f"{self.prefix}.lock").unlink(missing_ok=True)
            os.close(self.claim)
            self.claim = None

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
