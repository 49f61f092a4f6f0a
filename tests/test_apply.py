"""apply.sh, for real in throwaway network namespaces: confirm or roll back, remove.

A rollback restores rulegen's own chains, jumps and sets (nftables: its table) and
nothing else; what other tools add meanwhile stays. Each namespace under test has a
twin that sees the same changes from other tools without rulegen: after a rollback or a
remove the two rulesets are the same, tables and base chains included.
"""

from __future__ import annotations

import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from conftest import needs_root, profile_from
from generator.emitters import TARGETS, emit
from generator.optimizer import optimize
from generator.planner import plan
from test_emit_iptables import STATELESS, in_ns, load_case, needs_tools, run
from test_emit_iptables import netns  # noqa: F401 (fixture)

ENGINES = ["iptables", "nftables"]
ROLE = "nomad_clients"  # the role with the most hooks: DOCKER-USER and CNI-FORWARD
T = 2  # seconds to confirm in these tests
GRACE = 5  # the guard's extra wait (hostfw/confirm.sh.j2)


# The stateless profile with other VCS addresses: its sets' members change.
CHANGED = STATELESS.replace(
    "20.201.28.151/32, 20.205.243.166/32,", "198.51.100.0/24, 203.0.113.7/32,"
)


@pytest.fixture
def twin():
    name = f"rulegen-test-{secrets.token_hex(4)}"
    run("ip", "netns", "add", name)
    try:
        yield name
    finally:
        run("ip", "netns", "delete", name, check=False)


def files_for(
    engine: str, text: str | None = None, name: str = "generic-baremetal"
) -> dict[str, str]:
    """The generated files of one engine: a profile's text, or a shipped example."""
    if text is None:
        prof, matrix = load_case(name)
    else:
        prof = profile_from(text)
        matrix = optimize(plan(prof))[0]
    out = emit(matrix, prof, [TARGETS[engine]])
    return {k.split("/", 1)[1]: v for k, v in out.items()}


def write(folder: Path, files: dict[str, str]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for rel, text in files.items():
        (folder / rel).write_text(text)
    return folder


COUNTER = re.compile(r" counter packets \d+ bytes \d+")


def ruleset(ns: str) -> dict:
    """`nft list ruleset` as {table: {block: [lines]}}: blocks (chains, sets) in any
    order, rules in order, counters left out. iptables-nft's tables are in it too."""
    tables: dict = {}
    block = None
    for line in in_ns(ns, "nft", "list", "ruleset").stdout.splitlines():
        if line.startswith("table "):
            table = tables.setdefault(line.rstrip(" {"), {})
        elif re.match(r"^\t\w+ .* \{$", line):
            block = table.setdefault(line.strip(), [])
        elif line in ("\t}", "}") or not line.strip():
            continue
        else:
            block.append(COUNTER.sub("", line.strip()))
    return tables


def ipsets(ns: str) -> list[str]:
    """The sets and members (not the hash seed each set is created with)."""
    saved = in_ns(ns, "ipset", "save").stdout
    return sorted(re.sub(r" initval 0x[0-9a-f]+", "", saved).splitlines())


def saved_again(ns: str, engine: str) -> None:
    """Put rulegen's part through a save and a load, as a rollback does: iptables-nft
    then writes some matches in another order, nft a one-range set as a range (the
    same rules)."""

    def load(argv: list[str], text: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", ns, *argv],
            input=text,
            text=True,
            check=True,
            timeout=30,
        )

    if engine == "nftables":
        table = in_ns(ns, "nft", "list", "table", "inet", "rulegen").stdout
        load(["nft", "-f", "-"], "delete table inet rulegen\n" + table)
        return
    for tool in ("iptables", "ip6tables"):
        lines = in_ns(ns, f"{tool}-save", "-t", "filter").stdout.splitlines()
        ours = [l for l in lines if re.match(r"^(:RULEGEN-\S+ |-A RULEGEN-\S+ )", l)]
        if ours:
            load(
                [f"{tool}-restore", "--noflush"],
                "\n".join(["*filter", *ours, "COMMIT", ""]),
            )


def same(ns: str, twin: str) -> bool:
    return ruleset(ns) == ruleset(twin) and ipsets(ns) == ipsets(twin)


def both(nss, *args: str) -> None:
    for ns in nss:
        in_ns(ns, *args)


def foreign_setup(nss) -> None:
    """What kube-proxy or an operator had there before rulegen (IPv4 only: the IPv6
    filter table does not exist)."""
    both(nss, "iptables", "-N", "KUBE-SERVICES")
    both(
        nss,
        "iptables",
        "-A",
        "KUBE-SERVICES",
        "-p",
        "tcp",
        "--dport",
        "9",
        "-j",
        "ACCEPT",
    )
    both(nss, "iptables", "-A", "INPUT", "-j", "KUBE-SERVICES")
    both(nss, "nft", "add", "table", "ip", "foreign")
    both(nss, "nft", "add", "chain", "ip", "foreign", "keep")


def docker_starts(nss) -> None:
    """What Docker 20.10 does to the filter table when it starts and publishes a port
    (`docker run -p 9000:80`): its chains, its ACCEPT, and its jump to DOCKER-USER,
    which it deletes (if there) and inserts first (libnetwork's EnsureJumpRule)."""
    for ns in nss:

        def ipt(*args: str, check: bool = True):
            return in_ns(ns, "iptables", "--wait", *args, check=check)

        ipt("-N", "DOCKER")
        ipt("-A", "DOCKER", *PUBLISHED)
        if ipt("-S", "DOCKER-USER", check=False).returncode != 0:
            ipt("-N", "DOCKER-USER")
        if ipt("-C", "DOCKER-USER", "-j", "RETURN", check=False).returncode != 0:
            ipt("-A", "DOCKER-USER", "-j", "RETURN")
        if ipt("-C", "FORWARD", "-j", "DOCKER-USER", check=False).returncode == 0:
            ipt("-D", "FORWARD", "-j", "DOCKER-USER")
        ipt("-I", "FORWARD", "-j", "DOCKER-USER")
        ipt("-A", "FORWARD", "-o", "docker0", "-j", "DOCKER")
        ipt("-t", "nat", "-N", "DOCKER")
        ipt("-t", "nat", "-A", "DOCKER", *DNAT)


PUBLISHED = (
    "-d 172.17.0.2/32 ! -i docker0 -o docker0 -p tcp -m tcp --dport 80 -j ACCEPT"
)
PUBLISHED = tuple(PUBLISHED.split())
DNAT = tuple(
    "-p tcp -m tcp --dport 9000 -j DNAT --to-destination 172.17.0.2:80".split()
)


def operator_adds(nss, engine: str) -> None:
    """A rule the operator adds to another chain (and, with nftables, table)."""
    both(
        nss,
        "iptables",
        "--wait",
        "-A",
        "KUBE-SERVICES",
        "-p",
        "udp",
        "--dport",
        "7",
        "-j",
        "ACCEPT",
    )
    if engine == "nftables":
        both(
            nss,
            "nft",
            "add",
            "rule",
            "ip",
            "foreign",
            "keep",
            "tcp",
            "dport",
            "7",
            "accept",
        )


class Apply:
    """`sh apply.sh` as an operator runs it, with the test's own state folder."""

    def __init__(self, ns: str, folder: Path, state: Path):
        self.ns, self.folder, self.state = ns, folder, state

    def argv(self, *args: str) -> list[str]:
        return [
            "ip",
            "netns",
            "exec",
            self.ns,
            "env",
            f"RULEGEN_STATE={self.state}",
            "sh",
            "apply.sh",
            *args,
        ]

    def __call__(self, *args: str, check: bool = True):
        result = subprocess.run(
            self.argv(*args),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert not check or result.returncode == 0, result.stderr
        return result

    def start(self, *args: str) -> subprocess.Popen:
        """Load with the prompt; returns once the rules are loaded (stdin: a pipe)."""
        proc = subprocess.Popen(
            self.argv(*args),
            cwd=self.folder,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = proc.stderr.readline()
        assert "loaded" in line, line + proc.stderr.read()
        return proc

    def guards(self) -> list[str]:
        found = run(
            "pgrep", "-f", f"{self.folder}/apply.sh --rollback-after", check=False
        )
        return found.stdout.split()

    def settled(self) -> None:
        """No guard left running and nothing left in the state folder."""
        deadline = time.monotonic() + T + GRACE + 5
        while self.guards() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not self.guards()
        assert not self.state.exists() or not list(self.state.iterdir())


def finish(proc: subprocess.Popen, timeout: float) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=timeout)
    finally:
        proc.kill()
    return proc.returncode, err


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("earlier", [False, True], ids=["first-load", "reload"])
def test_rollback_restores_only_rulegen_and_keeps_others_changes(
    engine, earlier, netns, twin, tmp_path
):
    """Docker publishing a port and an operator's rule, both during the confirmation
    window, survive the rollback; rulegen's part is as before the load, or absent."""
    foreign_setup([netns, twin])
    old = write(tmp_path / "old", files_for(engine, STATELESS))
    new = write(tmp_path / "new", files_for(engine, CHANGED))
    state = tmp_path / "state"
    if earlier:
        for ns in (netns, twin):
            Apply(ns, old, state)("--yes", ROLE)
        saved_again(twin, engine)
    apply = Apply(netns, new, state)
    proc = apply.start("--timeout", str(T), ROLE)
    assert not same(netns, twin)  # the new rules are in
    docker_starts([netns, twin])
    operator_adds([netns, twin], engine)
    code, err = finish(proc, T + 20)
    assert code == 1, err
    assert "rulegen's previous rules restored." in err and "No such file" not in err
    assert same(netns, twin)
    saved = in_ns(netns, "iptables-save", "-t", "filter").stdout
    assert "-A DOCKER " + " ".join(PUBLISHED) in saved
    assert "-A KUBE-SERVICES -p udp -m udp --dport 7 -j ACCEPT" in saved
    assert saved.count("-j DOCKER-USER\n") == 1
    apply.settled()


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_remove_leaves_no_table_or_chain_that_was_not_there(
    engine, netns, twin, tmp_path
):
    foreign_setup([netns])
    before = ruleset(netns)
    folder = write(tmp_path / "rules", files_for(engine))
    apply = Apply(netns, folder, tmp_path / "state")
    roles = sorted({p.name.split(".")[0] for p in folder.glob("*.*tables")} or [ROLE])
    roles = roles if engine == "iptables" else ["kubernetes_nodes", ROLE]
    for role in roles:
        apply("--yes", role)
        assert ruleset(netns) != before
        apply("--remove", role)
        assert ruleset(netns) == before, role
    # on an empty host: no base chain, no IPv4 or IPv6 filter table stays behind
    empty = Apply(twin, folder, tmp_path / "state")
    empty("--yes", ROLE)
    empty("--remove", ROLE)
    assert ruleset(twin) == {}
    assert not (tmp_path / "state").exists()


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_a_held_up_prompt_leaves_the_rollback_to_the_guard(
    engine, netns, twin, tmp_path
):
    """The guard restores once; the prompt, resumed, says so instead of restoring too."""
    foreign_setup([netns, twin])
    folder = write(tmp_path / "rules", files_for(engine))
    apply = Apply(netns, folder, tmp_path / "state")
    proc = apply.start("--timeout", str(T), ROLE)
    shell = proc.pid  # ip netns exec and env exec the shell in place
    os.kill(shell, signal.SIGSTOP)
    deadline = time.monotonic() + T + GRACE + 10
    while not same(netns, twin) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert same(netns, twin)  # the guard restored
    operator_adds([netns, twin], engine)
    os.kill(shell, signal.SIGCONT)
    code, err = finish(proc, 30)
    assert code == 1, err
    assert "not kept: the guard restored rulegen's previous rules" in err
    assert "rulegen's previous rules restored." not in err and "No such file" not in err
    assert same(netns, twin)  # not restored a second time over the new rule
    apply.settled()


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_a_cut_session_is_rolled_back_by_the_guard_alone(engine, netns, twin, tmp_path):
    foreign_setup([netns, twin])
    folder = write(tmp_path / "rules", files_for(engine))
    apply = Apply(netns, folder, tmp_path / "state")
    proc = apply.start("--timeout", str(T), ROLE)
    proc.kill()  # SIGKILL: no trap runs; only the guard is left
    proc.wait(timeout=10)
    operator_adds([netns, twin], engine)
    deadline = time.monotonic() + T + GRACE + 10
    while not same(netns, twin) and time.monotonic() < deadline:
        time.sleep(0.3)
    assert same(netns, twin)
    apply.settled()


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_hangup_rolls_back_at_once(engine, netns, twin, tmp_path):
    folder = write(tmp_path / "rules", files_for(engine))
    apply = Apply(netns, folder, tmp_path / "state")
    proc = apply.start("--timeout", "30", ROLE)
    started = time.monotonic()
    proc.send_signal(signal.SIGHUP)
    code, err = finish(proc, 20)
    assert code == 1 and "interrupted; rulegen's previous rules restored." in err, err
    assert time.monotonic() - started < 10
    assert same(netns, twin)
    apply.settled()


def on_a_terminal(apply: Apply, answer: str, *args: str) -> tuple[int, str]:
    """apply.sh in a pseudo-terminal (util-linux script), answering once loaded."""
    import shlex

    command = " ".join(shlex.quote(a) for a in apply.argv(*args))
    proc = subprocess.Popen(
        ["script", "-qec", command, "/dev/null"],
        cwd=apply.folder,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    seen = b""
    deadline = time.monotonic() + 20
    while b"loaded" not in seen and time.monotonic() < deadline:
        chunk = proc.stdout.read1(4096)
        if not chunk:
            break
        seen += chunk
    proc.stdin.write(answer.encode() + b"\n")
    proc.stdin.flush()
    out, _ = proc.communicate(timeout=30)
    return proc.returncode, (seen + out).decode(errors="replace")


@needs_root
@needs_tools
@pytest.mark.skipif(not shutil.which("script"), reason="script (util-linux) is missing")
@pytest.mark.parametrize("engine", ENGINES)
def test_yes_typed_on_a_terminal_keeps_the_rules(engine, netns, twin, tmp_path):
    folder = write(tmp_path / "rules", files_for(engine))
    apply = Apply(netns, folder, tmp_path / "state")
    code, out = on_a_terminal(apply, "no", "--timeout", "15", ROLE)
    assert code == 1 and "rulegen's previous rules restored." in out, out
    assert same(netns, twin)
    code, out = on_a_terminal(apply, "yes", "--timeout", "15", ROLE)
    assert code == 0 and "rulegen: kept." in out and "restored" not in out, out
    Apply(twin, folder, tmp_path / "twin-state")("--yes", ROLE)
    assert same(netns, twin)
    apply.settled()


def forward_rules(ns: str, chain: str = "FORWARD") -> list[str]:
    saved = in_ns(ns, "iptables-save", "-t", "filter").stdout.splitlines()
    return [l for l in saved if l.startswith(f"-A {chain} ")]


@needs_root
@needs_tools
def test_docker_takes_over_the_jump_rulegen_made_for_it(netns, tmp_path):
    """Before Docker, FORWARD jumps to DOCKER-USER with Docker's own rule: Docker
    replaces it when it starts, so exactly one jump is left, first in FORWARD."""
    folder = write(tmp_path / "rules", files_for("iptables"))
    apply = Apply(netns, folder, tmp_path / "state")
    # an older rulegen's temporary jump, commented, is replaced on loading
    in_ns(netns, "iptables", "-N", "DOCKER-USER")
    old = ["-m", "comment", "--comment", "rulegen: until Docker starts"]
    in_ns(netns, "iptables", "-A", "FORWARD", *old, "-j", "DOCKER-USER")
    apply("--yes", ROLE)
    assert forward_rules(netns) == ["-A FORWARD -j DOCKER-USER"]
    docker_starts([netns])
    rules = forward_rules(netns)
    assert rules[0] == "-A FORWARD -j DOCKER-USER"
    assert rules.count("-A FORWARD -j DOCKER-USER") == 1 and len(rules) == 2
    assert forward_rules(netns, "DOCKER-USER")[0] == "-A DOCKER-USER -j RULEGEN-FWD"
    apply("--remove", ROLE)  # Docker's chain and jump stay; rulegen's go
    assert forward_rules(netns)[0] == "-A FORWARD -j DOCKER-USER"
    assert forward_rules(netns, "DOCKER-USER") == ["-A DOCKER-USER -j RETURN"]
    assert "RULEGEN" not in in_ns(netns, "iptables-save").stdout


def cni_plugin_adds(ns: str, address: str) -> None:
    """What the CNI firewall plugin (Nomad's bridge networking, admin chain NOMAD-ADMIN)
    does for an allocation: its chains, its jump first in FORWARD unless there, the
    admin jump first in CNI-FORWARD unless there, then the allocation's ACCEPTs."""

    def ipt(*args: str, check: bool = True):
        return in_ns(ns, "iptables", "--wait", *args, check=check)

    for chain in ("CNI-FORWARD", "NOMAD-ADMIN"):
        if ipt("-S", chain, check=False).returncode != 0:
            ipt("-N", chain)
    for chain, target in (("FORWARD", "CNI-FORWARD"), ("CNI-FORWARD", "NOMAD-ADMIN")):
        rule = ["-m", "comment", "--comment", "CNI firewall plugin rules", "-j", target]
        if ipt("-C", chain, *rule, check=False).returncode != 0:
            ipt("-I", chain, "1", *rule)
    established = ["-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED"]
    ipt("-A", "CNI-FORWARD", "-d", address, *established, "-j", "ACCEPT")
    ipt("-A", "CNI-FORWARD", "-s", address, "-j", "ACCEPT")


JOB, OUTSIDE = "172.26.64.5", "10.99.1.2"  # a bridge-networked allocation; a peer


@pytest.fixture
def routed(netns):
    """The Nomad client (netns) routes between an allocation's namespace and a peer's."""
    job, outside = names = [f"rulegen-test-{secrets.token_hex(4)}" for _ in range(2)]
    try:
        for ns, link, gateway, address in (
            (job, "rgj", "172.26.64.1/20", JOB + "/20"),
            (outside, "rgo", "10.99.1.1/24", OUTSIDE + "/24"),
        ):
            run("ip", "netns", "add", ns)
            run("ip", "-n", netns, "link", "add", link, "type", "veth", "peer", "eth0")
            run("ip", "-n", netns, "link", "set", "eth0", "netns", ns)
            run("ip", "-n", netns, "addr", "add", gateway, "dev", link)
            run("ip", "-n", netns, "link", "set", link, "up")
            run("ip", "-n", ns, "addr", "add", address, "dev", "eth0")
            run("ip", "-n", ns, "link", "set", "eth0", "up")
            run("ip", "-n", ns, "route", "add", "default", "via", gateway.split("/")[0])
        in_ns(netns, "sysctl", "-q", "-w", "net.ipv4.ip_forward=1")
        yield job, outside
    finally:
        for ns in names:
            run("ip", "netns", "delete", ns, check=False)


def reaches(ns: str, address: str, port: int) -> bool:
    """A TCP SYN from ns: refused (a RST: it got there), or dropped on the way."""
    code = (
        "import socket,sys\n"
        "try: socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1)\n"
        "except ConnectionRefusedError: sys.exit(0)\n"
        "except OSError: sys.exit(1)\n"
    )
    result = in_ns(ns, "python3", "-c", code, address, str(port), check=False)
    return result.returncode == 0


@needs_root
@needs_tools
@pytest.mark.parametrize("hooked", [True, False], ids=["cni-hooked", "property-out"])
def test_the_forward_chain_comes_before_cni_forward_accepts(
    hooked, netns, routed, tmp_path
):
    """Nomad's bridge networking puts CNI-FORWARD above DOCKER-USER and accepts all an
    allocation sends: rulegen's forward chain is jumped to first in CNI-FORWARD too.
    Taken out (hooks without CNI-FORWARD), the allocation reaches a forbidden port."""
    job, outside = routed
    files = files_for("iptables")
    if not hooked:
        files["apply.sh"] = files["apply.sh"].replace(" CNI-FORWARD:RULEGEN-FWD", "")
    folder = write(tmp_path / "rules", files)
    apply = Apply(netns, folder, tmp_path / "state")
    apply("--yes", ROLE)
    cni_plugin_adds(netns, JOB)
    assert forward_rules(netns)[0].endswith("-j CNI-FORWARD")  # above DOCKER-USER
    assert reaches(job, OUTSIDE, 9) is not hooked
    if hooked:
        rules = forward_rules(netns, "CNI-FORWARD")
        assert rules[1] == "-A CNI-FORWARD -j RULEGEN-FWD", rules  # after NOMAD-ADMIN
        apply("--remove", ROLE)  # the plugin's chain stays, without rulegen's jump
        assert len(forward_rules(netns, "CNI-FORWARD")) == 3
        assert reaches(job, OUTSIDE, 9)


@needs_root
@needs_tools
@pytest.mark.parametrize("engine", ENGINES)
def test_yes_says_what_it_loaded(engine, netns, tmp_path):
    files = files_for(engine)
    folder = write(tmp_path / "rules", files)
    said = Apply(netns, folder, tmp_path / "state")("--yes", ROLE).stderr.splitlines()
    if engine == "iptables":
        counts = ", ".join(
            f"{tool} {files[f'{ROLE}.{tool}'].count(chr(10) + '-A ')} rules"
            for tool in ("iptables", "ip6tables")
        )
        assert said[-1].startswith(f"rulegen: loaded {ROLE}: {counts}"), said
    else:
        assert said == [f"rulegen: loaded {ROLE}: table inet rulegen from {ROLE}.nft"]
