"""The matrix as text for people and programs: table, json, markdown, csv."""

from __future__ import annotations

import io
import json

from .matrix import DIRECTIONS, ROLE_TITLES, Matrix, Rule, port_text

FORMATS = ("table", "json", "markdown", "csv", "dot")
COLUMNS = ("protocol", "ports", "peer", "purpose", "reference")


def render(matrix: Matrix, fmt: str) -> str:
    return {
        "table": _table,
        "json": _json,
        "markdown": _markdown,
        "csv": _csv,
        "dot": _dot,
    }[fmt](matrix)


def peer_text(rule: Rule) -> str:
    peer = rule.peer
    if peer.role:
        return ROLE_TITLES[peer.role]
    return f"{peer.name}: {', '.join(peer.cidrs)}"


def _cells(rule: Rule, via: bool = True) -> list[str]:
    ports = port_text(rule.ports)
    if rule.source_ports:
        ports += f" (from {port_text(rule.source_ports)})"
    purpose = rule.purpose + (" [obsolete]" if rule.obsolete else "")
    purpose += " [site]" if rule.site else ""
    if via and rule.via:
        purpose += f" [{rule.via}]"
    return [rule.protocol, ports, peer_text(rule), purpose, rule.reference]


def _groups(matrix: Matrix):
    for role in matrix.roles():
        for direction in DIRECTIONS:
            rules = matrix.for_role(role, direction)
            if rules:
                yield role, direction, rules


def _header(matrix: Matrix) -> str:
    return (
        f"{matrix.profile}: CircleCI Server {matrix.server_version}"
        f" ({matrix.release_line} page), {matrix.cloud},"
        f" {'stateful' if matrix.stateful else 'stateless'}, {len(matrix.rules)} rules"
    )


def _table(matrix: Matrix) -> str:
    out = [_header(matrix)]
    peer_label = "source/destination"
    for role, direction, rules in _groups(matrix):
        peer_label = "source" if direction == "ingress" else "destination"
        rows = [_cells(r, via=False)[:4] for r in rules]
        heads = ["proto", "ports", peer_label, "purpose"]
        widths = [max(len(x) for x in col) for col in zip(heads, *rows)]
        out.append("")
        out.append(f"{ROLE_TITLES[role]} - {direction}")
        for row, rule in [(heads, None), *zip(rows, rules)]:
            out.append(
                "  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
            )
            if rule is not None and rule.via:
                # The path's hop, under the row: it decided the peer.
                indent = "  " + " " * (widths[0] + widths[1] + 4)
                out.append(f"{indent}path: {rule.via}")
    out.extend(_footer(matrix))
    return "\n".join(out) + "\n"


def _footer(matrix: Matrix) -> list[str]:
    out = []
    if matrix.warnings:
        out += ["", "Warnings:"] + [f"  - {w}" for w in matrix.warnings]
    if matrix.notes:
        out += ["", "Notes:"] + [f"  - {n}" for n in matrix.notes]
    return out


def _json(matrix: Matrix) -> str:
    return json.dumps(matrix.to_dict(), indent=2) + "\n"


def _markdown(matrix: Matrix) -> str:
    out = [f"# {_header(matrix)}"]
    for role, direction, rules in _groups(matrix):
        out += ["", f"## {ROLE_TITLES[role]} - {direction}", ""]
        out.append("| " + " | ".join(COLUMNS) + " |")
        out.append("|" + "---|" * len(COLUMNS))
        for rule in rules:
            cells = [c.replace("|", "\\|") for c in _cells(rule)]
            out.append("| " + " | ".join(cells) + " |")
    out.extend(_footer(matrix))
    return "\n".join(out) + "\n"


def _dot(matrix: Matrix) -> str:
    from .flowgraph import build, to_dot

    return to_dot(build(matrix))


def _csv(matrix: Matrix) -> str:
    import csv

    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["role", "direction", *COLUMNS, "flow"])
    for rule in matrix.rules:
        writer.writerow([rule.role, rule.direction, *_cells(rule), rule.flow])
    return buf.getvalue()


# --- the network ACL layer (aws.network_acls) -------------------------------------


def acl_table(layer) -> str:
    """Every ACL's entries in order, with the matrix rules each covers and, for a
    coarsened entry, how much wider it is."""
    s = layer.settings
    out = [
        "",
        "Network ACLs (aws.network_acls): lowest number first, first match decides,"
        " no match is a deny; stateless (replies on"
        f" {port_text(s.ephemeral)})",
    ]
    for acl in layer.acls:
        out += [
            "",
            f"{ROLE_TITLES[acl.role]} - network ACL on {', '.join(acl.subnets)}",
        ]
        for direction in ("inbound", "outbound"):
            entries = acl.entries(direction)
            side = "from" if direction == "inbound" else "to"
            out.append(f"  {direction}: {len(entries)} of {s.limit} entries")
            for e in entries:
                out.append(
                    f"    {e.number:<5} {e.action:<5} {e.protocol:<4}"
                    f" {port_text(e.ports):<12} {side} {e.cidr:<18} {e.label}"
                )
                if e.kind != "deny":
                    out.append(f"{'':10}covers: {', '.join(e.covers)}")
                if e.wider:
                    out.append(f"{'':10}coarsened: {e.wider}")
        for protocol, ports in acl.reserved():
            out.append(
                f"  keep {protocol}/{port_text(ports)} out of the hosts' ephemeral range"
                " (net.ipv4.ip_local_reserved_ports): replies there are denied"
            )
    return "\n".join(out) + "\n"


def acl_dict(layer) -> list[dict]:
    def entry(e) -> dict:
        return {
            "number": e.number,
            "action": e.action,
            "kind": e.kind,
            "protocol": e.protocol,
            "ports": list(e.ports) if e.ports else None,
            "cidr": e.cidr,
            "purpose": e.label,
            "covers": list(e.covers),
            "wider": e.wider or None,
        }

    return [
        {
            "role": acl.role,
            "subnets": list(acl.subnets),
            "inbound": [entry(e) for e in acl.inbound],
            "outbound": [entry(e) for e in acl.outbound],
        }
        for acl in layer.acls
    ]
