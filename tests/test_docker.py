"""A Nomad client's iptables rules next to a real Docker daemon (Debian's docker.io).

dockerd runs inside a network namespace of the test's own, with its own data root,
exec root, socket and cgroup parent. `ip netns exec` gives the daemon a mount
namespace of its own with a fresh /sys, which hides the cgroup mounts: the daemon's
shell mounts them again there (and a tmpfs over /etc/docker, where dockerd keeps its
key), so nothing it mounts or writes reaches the machine outside that folder. The
image is a static busybox imported from a tarball: nothing is pulled.

The host (the daemon's namespace) is a Nomad client of the aws-private-vpn profile at
10.0.16.10; one more namespace, "world", stands in for everyone else: an address in
ssh_rerun (172.16.0.50), one in no peer list (198.18.0.10), an internet server
(198.18.0.20) and the instance metadata service (169.254.169.254), each listening.
rulegen loads first, as its boot unit orders it, then the daemon starts.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from conftest import is_root
from test_apply import Apply, files_for, write
from test_emit_iptables import in_ns, run

BUSYBOX = "/usr/bin/busybox"
HOST, GATEWAY = "10.0.16.10", "10.0.16.1"
RERUN, OUTSIDER, INTERNET, METADATA = (
    "172.16.0.50",
    "198.18.0.10",
    "198.18.0.20",
    "169.254.169.254",
)
LISTEN = [(INTERNET, 443), (INTERNET, 9), (METADATA, 80)]
ROLE = "nomad_clients"
DAEMON_START = 60  # seconds: bounded waits, everywhere
PROBE = 2


def why_not() -> str | None:
    """Why this machine cannot run the test, or None."""
    if not is_root:
        return "needs root (network namespaces, a Docker daemon)"
    missing = [
        t
        for t in ("dockerd", "containerd", "runc", "ip", "iptables")
        if not shutil.which(t)
    ]
    if missing:
        return f"missing {', '.join(missing)} (Debian package docker.io)"
    if not Path(BUSYBOX).exists() or b"ld-linux" in Path(BUSYBOX).read_bytes()[:4096]:
        return f"no static {BUSYBOX} for the image (Debian package busybox-static)"
    if not any(
        line.split()[2] in ("cgroup", "cgroup2") for line in Path("/proc/mounts").open()
    ):
        return "no cgroup file system mounted: dockerd cannot run containers"
    return None


pytestmark = [
    pytest.mark.docker,
    pytest.mark.xdist_group("docker"),  # one daemon, on one worker
    pytest.mark.skipif(why_not() is not None, reason=str(why_not())),
]


def cgroup_mounts() -> list[str]:
    """Shell lines that mount this machine's cgroup file systems again (a fresh /sys)."""
    lines = []
    for line in Path("/proc/mounts").read_text().splitlines():
        _, target, kind, options = line.split()[:4]
        if not target.startswith("/sys/fs/cgroup"):
            continue
        if kind == "tmpfs" and target == "/sys/fs/cgroup":
            lines.append("mount -t tmpfs -o mode=755 cgroup /sys/fs/cgroup")
        elif kind in ("cgroup", "cgroup2"):
            keep = ",".join(
                o for o in options.split(",") if o not in ("rw", "relatime")
            )
            opts = f" -o {keep}" if keep else ""
            lines.append(f"mkdir -p {target} && mount -t {kind}{opts} {kind} {target}")
    return lines


def docker_tool() -> str:
    """Debian's client, which matches the daemon (another one may be first on PATH)."""
    return "/usr/bin/docker" if Path("/usr/bin/docker").exists() else "docker"


class Daemon:
    """dockerd in `ns`, everything of its own under `root`."""

    def __init__(self, ns: str, root: Path):
        self.ns, self.root = ns, root
        self.socket = root / "docker.sock"
        self.parent = f"/{ns}"  # the cgroup parent of its containers
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        etc = "mount -t tmpfs -o mode=700 docker-etc /etc/docker"
        script = "\n".join(
            ["set -e", *cgroup_mounts(), f"if [ -d /etc/docker ]; then {etc}; fi"]
            + [
                "exec dockerd"
                f" --data-root {self.root}/data --exec-root {self.root}/exec"
                f" --pidfile {self.root}/docker.pid -H unix://{self.socket}"
                f" --cgroup-parent {self.parent} --storage-driver vfs"
                " --userland-proxy=false --log-level warn"
            ]
        )
        (self.root / "start.sh").write_text(script + "\n")
        log = (self.root / "dockerd.log").open("w")
        self.proc = subprocess.Popen(
            ["ip", "netns", "exec", self.ns, "sh", str(self.root / "start.sh")],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + DAEMON_START
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            if self.docker("version", check=False).returncode == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"dockerd did not start: {self.log()[-2000:]}")

    def log(self) -> str:
        return (self.root / "dockerd.log").read_text(errors="replace")

    def docker(self, *args: str, check: bool = True, timeout: float = 60, input=None):
        result = subprocess.run(
            [docker_tool(), "-H", f"unix://{self.socket}", *args],
            capture_output=True,
            input=input,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)}: {result.stderr.decode()}")
        return result

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            running = self.docker("ps", "-q", check=False, timeout=20).stdout.split()
            if running:
                self.docker("rm", "-f", *[c.decode() for c in running], check=False)
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        # containerd and its shims, should any outlive the daemon
        pids = run("ip", "netns", "pids", self.ns, check=False).stdout.split()
        for pid in pids:
            try:
                os.kill(int(pid), signal.SIGKILL)
            except ProcessLookupError:
                pass
        base = Path("/sys/fs/cgroup")
        name = self.parent.lstrip("/")
        for left in [base / name, *(c / name for c in base.iterdir() if c.is_dir())]:
            if left.is_dir():
                subs = [d for d in left.rglob("*") if d.is_dir()]
                for sub in sorted(subs, reverse=True):
                    sub.rmdir()
                left.rmdir()


def image_tarball(path: Path) -> None:
    """A root file system of one static busybox and the applets the test runs."""
    with tarfile.open(path, "w") as tar:
        tar.add(BUSYBOX, "bin/busybox")
        for applet in ("sh", "httpd", "nc", "mkdir", "echo", "sleep"):
            link = tarfile.TarInfo(f"bin/{applet}")
            link.type, link.linkname = tarfile.SYMTYPE, "busybox"
            tar.addfile(link)


LISTENER = """
import socket, sys, threading
def serve(address, port):
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((address, port)); s.listen(16)
    while True:
        c, _ = s.accept(); c.close()
for pair in sys.argv[1:]:
    a, p = pair.rsplit(":", 1)
    threading.Thread(target=serve, args=(a, int(p)), daemon=True).start()
print("ready", flush=True)
threading.Event().wait()
"""


@pytest.fixture(scope="module")
def docker_host(tmp_path_factory):
    """(host namespace, world namespace, daemon, rules folder, state folder)."""
    tag = secrets.token_hex(4)
    host, world = f"rulegen-test-{tag}", f"rulegen-test-{tag}w"
    root = tmp_path_factory.mktemp("docker")
    daemon = Daemon(host, root)
    listener = None
    try:
        for ns in (host, world):
            run("ip", "netns", "add", ns)
            in_ns(ns, "ip", "link", "set", "lo", "up")
        run("ip", "-n", host, "link", "add", "eth0", "type", "veth", "peer", "wrld0")
        run("ip", "-n", host, "link", "set", "wrld0", "netns", world)
        in_ns(host, "ip", "addr", "add", f"{HOST}/20", "dev", "eth0")
        in_ns(host, "ip", "link", "set", "eth0", "up")
        in_ns(host, "ip", "route", "add", "default", "via", GATEWAY)
        in_ns(world, "ip", "addr", "add", f"{GATEWAY}/20", "dev", "wrld0")
        in_ns(world, "ip", "link", "set", "wrld0", "up")
        for address in (RERUN, OUTSIDER, INTERNET, METADATA):
            in_ns(world, "ip", "addr", "add", f"{address}/32", "dev", "lo")
        listener = subprocess.Popen(
            ["ip", "netns", "exec", world, "python3", "-c", LISTENER]
            + [f"{a}:{p}" for a, p in LISTEN],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert listener.stdout.readline().strip() == "ready"
        folder = write(root / "rules", files_for("iptables", name="aws-private-vpn"))
        state = root / "state"
        Apply(host, folder, state)("--yes", ROLE)  # before Docker, as at boot
        daemon.start()
        image_tarball(root / "image.tar")
        daemon.docker("import", str(root / "image.tar"), "rulegen-test:busybox")
        yield host, world, daemon, folder, state
    finally:
        daemon.stop()
        if listener is not None:
            listener.kill()
            listener.wait(timeout=10)
        for ns in (host, world):
            run("ip", "netns", "delete", ns, check=False)
        shutil.rmtree(root, ignore_errors=True)


PROBES = """
import json, socket, sys, threading
out = {}
def one(key, src, dst, port):
    s = socket.socket(); s.settimeout(float(sys.argv[1]))
    try:
        if src: s.bind((src, 0))
        s.connect((dst, int(port))); out[key] = True
    except OSError:
        out[key] = False
    finally:
        s.close()
threads = [threading.Thread(target=one, args=(a, *a.split(">"))) for a in sys.argv[2:]]
[t.start() for t in threads]; [t.join() for t in threads]
print(json.dumps(out))
"""


def reach(world: str, *probes: tuple[str, int]) -> dict:
    """From world: (source, port) -> did a TCP connection to the host's port open."""
    import json

    keys = [f"{src}>{HOST}>{port}" for src, port in probes]
    result = in_ns(world, "python3", "-c", PROBES, str(PROBE), *keys)
    found = json.loads(result.stdout)
    return {(src, port): found[k] for (src, port), k in zip(probes, keys)}


WEB = "mkdir -p /www && echo hi > /www/index.html && httpd -p 80 -h /www && httpd -f -p 8080 -h /www"


def web(daemon: Daemon, name: str, *ports: str) -> str:
    publish = [arg for p in ports for arg in ("-p", p)]
    daemon.docker(
        "run", "-d", "--name", name, *publish, "rulegen-test:busybox", "sh", "-c", WEB
    )
    return (
        daemon.docker("inspect", "-f", "{{.NetworkSettings.IPAddress}}", name)
        .stdout.decode()
        .strip()
    )


def rules(ns: str, chain: str) -> list[str]:
    saved = in_ns(ns, "iptables-save", "-t", "filter").stdout.splitlines()
    return [l for l in saved if l.startswith(f"-A {chain} ")]


def rulegen_part(ns: str) -> list[str]:
    saved = in_ns(ns, "iptables-save", "-t", "filter").stdout.splitlines()
    return [l for l in saved if "RULEGEN-" in l]


def test_docker_takes_over_the_jump_rulegen_made_for_it(docker_host):
    host, _, _, _, _ = docker_host
    forward = rules(host, "FORWARD")
    assert forward[0] == "-A FORWARD -j DOCKER-USER"
    assert forward.count("-A FORWARD -j DOCKER-USER") == 1, forward
    assert rules(host, "DOCKER-USER") == [
        "-A DOCKER-USER -j RULEGEN-FWD",
        "-A DOCKER-USER -j RETURN",
    ]


def test_published_ports_open_only_as_the_profile_says(docker_host):
    host, world, daemon, _, _ = docker_host
    web(daemon, "web", "8000:80", "64600:80", "8080:8080")
    try:
        seen = reach(
            world,
            (RERUN, 64600),
            (OUTSIDER, 64600),
            (RERUN, 8000),
            (OUTSIDER, 8000),
            (OUTSIDER, 8080),
        )
    finally:
        daemon.docker("rm", "-f", "web")
    # the Nomad rerun SSH range from ssh_rerun only; 8000 (to the container's 80) and
    # 8080 are opened by no rule
    assert seen == {
        (RERUN, 64600): True,
        (OUTSIDER, 64600): False,
        (RERUN, 8000): False,
        (OUTSIDER, 8000): False,
        (OUTSIDER, 8080): False,
    }


def test_a_job_reaches_the_internet_but_not_the_metadata_service(docker_host):
    _, _, daemon, _, _ = docker_host

    def connects(address: str, port: int) -> bool:
        job = daemon.docker(
            "run",
            "--rm",
            "rulegen-test:busybox",
            "nc",
            "-w",
            str(PROBE),
            address,
            str(port),
            check=False,
            input=b"",
        )
        return job.returncode == 0

    assert connects(INTERNET, 443)
    assert not connects(INTERNET, 9)
    assert not connects(METADATA, 80)


def test_a_rollback_keeps_the_port_docker_published_meanwhile(docker_host, tmp_path):
    """The issue's case: `docker run -p` during the confirmation window kept its DNAT
    and lost its filter ACCEPT. Now only rulegen's part goes back."""
    host, world, daemon, folder, state = docker_host
    before = rulegen_part(host)
    files = {p.name: p.read_text() for p in folder.iterdir()}
    text = files[f"{ROLE}.iptables"]
    assert "--ctorigdstport 64535:65535" in text
    files[f"{ROLE}.iptables"] = text.replace(
        "64535:65535", "64535:64535"
    )  # rerun SSH narrowed
    new = write(tmp_path / "new", files)
    apply = Apply(host, new, state)
    proc = apply.start("--timeout", "20", ROLE)
    try:
        address = web(daemon, "late", "64601:8080")
        during = reach(world, (RERUN, 64601))
        _, err = proc.communicate(timeout=30)  # no "yes": end of input
    finally:
        proc.kill()
    assert during == {(RERUN, 64601): False}  # the new rules, while they are in
    assert proc.returncode == 1 and "rulegen's previous rules restored." in err, err
    try:
        assert reach(world, (RERUN, 64601)) == {(RERUN, 64601): True}
        docker_rules = rules(host, "DOCKER")
        assert any(f"-d {address}/32" in r and "-j ACCEPT" in r for r in docker_rules)
        assert rulegen_part(host) == before
        assert rules(host, "FORWARD").count("-A FORWARD -j DOCKER-USER") == 1
        apply.settled()
    finally:
        daemon.docker("rm", "-f", "late")


def test_remove_leaves_docker_as_it_was(docker_host):
    host, world, daemon, folder, state = docker_host
    apply = Apply(host, folder, state)
    web(daemon, "plain", "8080:8080")
    try:
        assert reach(world, (OUTSIDER, 8080)) == {(OUTSIDER, 8080): False}
        apply("--remove", ROLE)
        assert not rulegen_part(host)
        assert rules(host, "DOCKER-USER") == ["-A DOCKER-USER -j RETURN"]
        assert rules(host, "FORWARD")[0] == "-A FORWARD -j DOCKER-USER"
        assert reach(world, (OUTSIDER, 8080)) == {
            (OUTSIDER, 8080): True
        }  # Docker's own
    finally:
        daemon.docker("rm", "-f", "plain")
        apply("--yes", ROLE)
