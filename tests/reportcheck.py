"""What a report must show, derived from rulegen's JSON contracts (plan, diff), and
the 1,000-address profile the report tests share."""

from __future__ import annotations

import ipaddress
import json

import yaml
from click.testing import CliRunner

from generator.cli import main

from conftest import ROOT

MANY = 1000


def cli(*args) -> tuple[int, str]:
    result = CliRunner().invoke(main, [str(a) for a in args])
    return result.exit_code, result.stdout


def plan_json(path, *extra) -> dict:
    code, out = cli("plan", path, "--format", "json", *extra)
    assert code == 0, out
    return json.loads(out)


def diff_json(old, new, *extra) -> dict:
    code, out = cli("diff", old, new, "--format", "json", *extra)
    assert code in (0, 2), out
    return json.loads(out)


def node_of(peer: dict) -> str:
    """The diagram's node for a rule's peer: its role, or its peer list."""
    if "role" in peer:
        return peer["role"]
    name = peer.get("name") or "addresses"
    return "peer_" + "".join(c if c.isalnum() else "_" for c in name)


def ends(role: str, direction: str, item: dict) -> list[tuple[str, str]]:
    """(source, destination) of the arrows a rule or a changed piece belongs on.

    A return rule (stateless) is drawn on the arrow of the flow it answers.
    """
    peer = item["peer"]
    names = (peer.get("name") or "").split("/") if "cidrs" in peer else [None]
    out = []
    for name in names:
        other = node_of(peer if name is None else {**peer, "name": name})
        pair = (other, role) if direction == "ingress" else (role, other)
        out.append(pair[::-1] if item.get("source_ports") else pair)
    return out


def port_words(item: dict) -> str:
    """How the ports of a rule or piece read on an arrow's label (a return rule's:
    the ports of the flow it answers)."""
    if item["protocol"] == "all":
        return "all traffic"
    if item["protocol"] == "other":
        return "protocols other than tcp/udp"
    lo, hi = item.get("source_ports") or item["ports"]
    return str(lo) if lo == hi else f"{lo}-{hi}"


def many_address_profile(tmp_path) -> tuple:
    """aws-private-vpn with 1,000 scattered admin addresses (none adjacent, so none
    merge) and as many VCS ranges."""
    data = yaml.safe_load((ROOT / "profiles/aws-private-vpn.yaml").read_text())
    base = int(ipaddress.IPv4Address("198.18.0.0"))
    admin = [f"{ipaddress.IPv4Address(base + 2 * i)}/32" for i in range(MANY)]
    vcs_base = int(ipaddress.IPv4Address("100.64.0.0"))
    vcs = [f"{ipaddress.IPv4Address(vcs_base + 512 * i)}/24" for i in range(MANY)]
    data["name"] = "acme-many"
    data["peers"]["ssh_admin"] = admin
    data["peers"]["vcs"] = vcs
    path = tmp_path / "acme-many.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path, admin, vcs


def stateless_profile(tmp_path):
    """The bare-metal example with a stateless rule engine (return rules)."""
    data = yaml.safe_load((ROOT / "profiles/generic-baremetal.yaml").read_text())
    data["name"] = "acme-metal-stateless"
    data["stateful"] = False
    path = tmp_path / "acme-metal-stateless.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
