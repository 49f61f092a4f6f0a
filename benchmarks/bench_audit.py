"""Cost of `rulegen audit` on 1,000 live rules, per reader, in process and as a command.

Each export holds the profile's own rules plus 1,000 made-up ones (seeded, so every
run reads the same): iptables-save with a user chain, jumps and RETURNs; GCP rules
of mixed priorities with denies; AWS permissions spread over three groups of one
role. The command is timed against the bare start-up `rulegen --version`. Then one
comment line of 100 KB, 400 KB and 5 MB in an iptables-save export: reading is linear
in the input (shlex took 0.8 s, 3.9 s and minutes). Run:

    .venv/bin/python benchmarks/bench_audit.py
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from generator.audit import audit  # noqa: E402
from generator.emitters import TARGETS  # noqa: E402
from generator.pipeline import files_for, shipped_matrix  # noqa: E402
from generator.profile import load_profile  # noqa: E402
from generator.readers import Context  # noqa: E402

RULES = 1000


def best(fn, number: int = 1) -> float:
    return min(timeit.repeat(fn, number=number, repeat=5)) / number


def wall(args: list[str]) -> float:
    times = []
    for _ in range(5):
        start = time.perf_counter()
        subprocess.run(args, capture_output=True, cwd=ROOT)
        times.append(time.perf_counter() - start)
    return min(times)


def address(rnd: random.Random) -> str:
    return (
        f"10.{rnd.randrange(64, 256)}.{rnd.randrange(256)}.0/{rnd.choice((24, 26, 28))}"
    )


def iptables_export(prof, rnd) -> str:
    files = files_for(prof, shipped_matrix(prof), [TARGETS["iptables"]])
    own = files["iptables/nomad_clients.iptables"]
    lines = [l for l in own.splitlines() if l and not l.startswith("#")]
    extra = [":EXTRA - [0:0]", "-A INPUT -j EXTRA"]
    for i in range(RULES):
        lo = rnd.randrange(1024, 60000)
        verdict = rnd.choice(("ACCEPT", "ACCEPT", "DROP", "RETURN"))
        extra.append(
            f"-A EXTRA -s {address(rnd)} -p {rnd.choice(('tcp', 'udp'))}"
            f" -m {rnd.choice(('tcp', 'udp'))} --dport {lo}:{lo + rnd.randrange(20)}"
            f" -j {verdict}"
        )
    header = ["*filter", ":INPUT ACCEPT [0:0]", ":FORWARD ACCEPT [0:0]"]
    header += [":OUTPUT ACCEPT [0:0]"]
    body = [l for l in lines if l not in ("*filter", "COMMIT")]
    jumps = ["-A INPUT -j RULEGEN-IN", "-A OUTPUT -j RULEGEN-OUT", "COMMIT"]
    return "\n".join(header + extra + body + jumps) + "\n"


def gcp_export(prof, rnd) -> str:
    files = files_for(prof, shipped_matrix(prof), [TARGETS["gcp-firewall"]])
    rules = json.loads(files["gcp-firewall/firewalls.json"])
    for i in range(RULES):
        lo = rnd.randrange(1024, 60000)
        rules.append(
            {
                "name": f"extra-{i}",
                "network": "global/networks/circleci",
                "direction": rnd.choice(("INGRESS", "EGRESS")),
                "priority": rnd.randrange(100, 65000),
                rnd.choice(("allowed", "allowed", "denied")): [
                    {"IPProtocol": "tcp", "ports": [f"{lo}-{lo + rnd.randrange(20)}"]}
                ],
                "sourceRanges": [address(rnd)],
                "destinationRanges": [address(rnd)],
                "targetTags": [rnd.choice(("acme-gke-node", "acme-nomad", "acme-vm"))],
            }
        )
    return json.dumps(rules)


def aws_export(rnd) -> str:
    groups = []
    for n in range(3):
        perms = {"IpPermissions": [], "IpPermissionsEgress": []}
        for i in range(RULES // 3):
            lo = rnd.randrange(1024, 60000)
            perms[rnd.choice(list(perms))].append(
                {
                    "IpProtocol": "tcp",
                    "FromPort": lo,
                    "ToPort": lo + rnd.randrange(20),
                    "IpRanges": [{"CidrIp": address(rnd)}],
                }
            )
        name = "acme-prod-nomad-clients" + (f"-{n + 1}" if n else "")
        groups.append({"GroupId": f"sg-{n:017x}", "GroupName": name, **perms})
    return json.dumps({"SecurityGroups": groups})


def main() -> None:
    rnd = random.Random(15)
    cases = [
        ("iptables", "generic-baremetal", "iptables", iptables_export),
        ("gcp", "gcp", "gcp", gcp_export),
        ("aws", "aws-private-vpn", "aws", lambda prof, rnd: aws_export(rnd)),
    ]
    start = wall([sys.executable, "-m", "generator", "--version"])
    print(f"start-up (rulegen --version): {start:.3f} s")
    with tempfile.TemporaryDirectory() as tmp:
        for reader, profile_name, option, make in cases:
            path = ROOT / "profiles" / f"{profile_name}.yaml"
            prof = load_profile(path)
            text = make(prof, rnd)
            role = "nomad_clients" if reader == "iptables" else None
            context = Context(prof, role=role)
            seconds = best(lambda: audit(reader, {reader: ("export", text)}, context))
            export = Path(tmp) / f"{reader}.export"
            export.write_text(text)
            args = [sys.executable, "-m", "generator", "audit", str(path)]
            args += [f"--{'iptables-save' if option == 'iptables' else option}"]
            args += [str(export)] + (["--role", role] if role else [])
            command = wall(args)
            print(
                f"{reader:<9} {RULES} extra rules: audit {seconds:.3f} s in process,"
                f" {command:.3f} s as a command ({command / start:.1f}x start-up)"
            )


def long_comments() -> None:
    path = ROOT / "profiles" / "generic-baremetal.yaml"
    prof = load_profile(path)
    context = Context(prof, role="nomad_clients")
    base = iptables_export(prof, random.Random(1))
    for size in (100_000, 400_000, 5_000_000):
        rule = f'-A INPUT -m comment --comment "{"x" * size}" -j RULEGEN-IN\n'
        text = base.replace("-A INPUT -j RULEGEN-IN\n", rule)
        seconds = best(lambda: audit("iptables", {"iptables": ("e", text)}, context))
        print(f"iptables  one comment of {size:>9,} bytes: audit {seconds:.3f} s")


if __name__ == "__main__":
    main()
    long_comments()
