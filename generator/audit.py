"""audit: what a live firewall blocks of the page's flows, and what it allows beyond them.

A reader (generator.readers) turns the live export into matrix rules; the profile's
matrix is narrowed to what the reader's target can express and to the roles and
address families the export speaks for. Both sides address a role by its subnets
when the profile lists them (a security group or a network tag stands for the
instances that carry it, which live in those subnets), and loopback is left out.
Then the one semantic diff (generator.diff.compare) says, flow by flow, what is
missing (required, blocked live: with the page reference) and what is in excess
(allowed live, not required: with the live rule that allows it).

A host reader also reads the forward path for what reaches a container through DNAT
(a published port, a NodePort), by its original port: that must be what the role's
ingress rules let in (and, on Kubernetes nodes, the pods' own traffic), and is compared
apart, so that a published port open to everyone is reported as an excess.

A host firewall (a target with `host_firewall`) is also required to let through the
host essentials generator.hostfw derives from the profile (ICMP errors, NTP, the
metadata service, DHCP, pods on Kubernetes nodes...): they join the required side as
rules of their own, with "host essentials" as their reference, so a live host that
allows them is clean and one that blocks them is missing an essential.
"""

from __future__ import annotations

from dataclasses import replace

from . import hostfw
from .diff import Change, Piece, TrafficDiff, compare, merged, piece_text
from .matrix import DIRECTIONS, ROLE_TITLES, ROLES, Matrix, Peer, Rule
from .readers import READERS, Context, Finding, Live, ReadError, Reader
from .readers.engine import (
    ICMP_NAMES,
    ICMP_TYPES,
    LOOPBACK_SPACE,
    address_intervals,
    cidrs,
    family_space,
    icmp_beyond,
    icmp_type_text,
    intersect,
    peer_text,
    subtract,
)
from .records import dataclass

MISSING = ("removed", "narrowed")
EXCESS = ("added", "widened")
FAIL_ON = ("missing", "excess", "any")


@dataclass
class Audit:
    reader: Reader
    sources: list[str]
    required: Matrix
    live: Live
    traffic: TrafficDiff
    forward: TrafficDiff | None = None  # through DNAT, where the reader reads it
    # aws.network_acls: the live ACLs against the generated ones, by the evaluator
    acls: TrafficDiff | None = None
    acl_notes: list = None  # type: ignore[assignment]

    @property
    def forward_changes(self) -> list:
        return self.forward.changes if self.forward else []

    @property
    def acl_changes(self) -> list:
        return self.acls.changes if self.acls else []

    @property
    def missing(self):
        changes = self.traffic.changes + self.forward_changes + self.acl_changes
        return [c for c in changes if c.kind in MISSING]

    @property
    def excess(self):
        changes = self.traffic.changes + self.forward_changes + self.acl_changes
        return [c for c in changes if c.kind in EXCESS]

    @property
    def different(self) -> bool:
        return bool(
            self.traffic.changes
            or self.forward_changes
            or self.acl_changes
            or self.live.unknown
        )

    def exit_code(self, fail_on: str | None = None) -> int:
        """0 nothing to report, 2 findings (missing or excess), 3 findings that
        --fail-on names, 4 part of the export not evaluated (unless 3 applies: a
        finding that --fail-on names comes first); 1 is bad input, elsewhere."""
        hit = {
            "missing": bool(self.missing),
            "excess": bool(self.excess),
            "any": bool(self.missing or self.excess),
        }
        if fail_on and hit[fail_on]:
            return 3
        if self.live.unknown:
            return 4
        return 2 if hit["any"] else 0


def _clip(rule: Rule, space) -> Rule | None:
    """The rule narrowed to the audited address space (None if nothing is left)."""
    if rule.peer.role:
        return rule
    ivs = [iv for c in rule.peer.cidrs for iv in address_intervals(c)]
    kept = intersect(ivs, space)
    if not kept:
        return None
    return replace(rule, peer=Peer(cidrs=cidrs(kept), name=rule.peer.name))


def lower(rules, subnets: dict, space) -> list[Rule]:
    """Role peers as the role's subnets (when listed), clipped to the audited space."""
    out = []
    for rule in rules:
        if rule.peer.role and subnets.get(rule.peer.role):
            peer = Peer(cidrs=tuple(subnets[rule.peer.role]), name=rule.peer.role)
            rule = replace(rule, peer=peer)
        clipped = _clip(rule, space)
        if clipped is not None:
            out.append(clipped)
    return out


def required_matrix(profile, reader: Reader, live: Live) -> Matrix:
    """The profile's shipped matrix as the reader's platform would hold it."""
    from .emitters import EmitError, TARGETS, expressible
    from .pipeline import shipped_matrix

    matrix = shipped_matrix(profile)
    target = TARGETS[reader.target]
    try:
        rules = expressible(target, matrix)
    except EmitError as exc:
        raise ReadError([f"the profile cannot be audited against {reader.name}: {exc}"])
    rules = [r for r in rules if r.role in live.roles]
    if live.stateful:  # the live engine lets replies through by itself
        rules = [r for r in rules if not r.is_return]
    if target.host_firewall:
        stateful = live.stateful or matrix.stateful
        rules += [
            rule
            for role in live.roles
            for rule in essential_rules(profile, role, stateful)[0]
        ]
    space = subtract(family_space(live.families), LOOPBACK_SPACE)
    lowered = lower(rules, profile.subnets, space)
    unplaced = sorted({r.peer.role for r in lowered if r.peer.role})
    if unplaced:
        raise ReadError(
            [
                f"network.subnets.{role} is empty: the audit finds a role's instances"
                " by their subnets; list them in the profile"
                for role in unplaced
            ]
        )
    return replace(matrix, rules=tuple(lowered))


def essential_rules(profile, role: str, stateful: bool):
    """The host essentials of a role as matrix rules, and the ICMP they allow.

    They are what hostfw lays out for the role when the matrix gives it nothing:
    every allowing entry of its ingress and egress chains but loopback and replies
    (left out of the audit and left to the engine); forward is not audited.
    Returns (rules, {direction: the ICMP allowed, (peer interval, type interval)
    boxes}).
    """
    fw = hostfw.build(
        role,
        [],
        profile.subnets,
        stateful,
        hostfw.FAMILIES,
        essentials=hostfw.essentials_for(profile, role),
    )
    rules: list[Rule] = []
    icmp: dict = {}
    for family, fr in fw.families.items():
        anywhere = ("0.0.0.0/0",) if family == 4 else ("::/0",)
        for direction in ("ingress", "egress"):
            purpose = ""
            for entry in fr.chains[direction].entries:
                if entry.notes:
                    purpose = entry.notes[0].removesuffix(f" [{hostfw.ESSENTIALS}]")
                if entry.action != "allow" or entry.iface or entry.ctstate:
                    continue
                peer = (entry.src if direction == "ingress" else entry.dst) or anywhere
                if entry.protocol in hostfw.ICMP.values():
                    types = ICMP_TYPES[0]
                    if entry.icmp_type:
                        kind = ICMP_NAMES[family][entry.icmp_type]
                        types = (kind, kind)
                    boxes = [(iv, types) for c in peer for iv in address_intervals(c)]
                    icmp.setdefault(direction, []).extend(boxes)
                    continue
                for ports in entry.dports or (None,):
                    for sports in entry.sports or (None,):
                        rules.append(
                            Rule(
                                role=role,
                                direction=direction,
                                protocol=entry.protocol or "all",
                                ports=ports,
                                source_ports=sports,
                                peer=Peer(cidrs=tuple(peer)),
                                purpose=purpose,
                                reference=hostfw.ESSENTIALS,
                                flow=entry.flows[0] if entry.flows else "",
                            )
                        )
    return rules, icmp


def audit(reader_name: str, sources: dict, context: Context) -> Audit:
    """Read the export, build the required matrix, compare them flow by flow."""
    reader = READERS[reader_name]
    live = reader.reader().read(sources, context)
    if context.role and not reader.per_role:  # a cloud export, one role audited
        if context.role not in live.roles:
            raise ReadError(
                [f"--role {context.role}: no rules of that role in the export"]
            )
        live.roles = (context.role,)
        kept = tuple(r for r in live.matrix.rules if r.role == context.role)
        live.matrix = replace(live.matrix, rules=kept)
        live.unknown = [f for f in live.unknown if f.role in (None, context.role)]
        live.icmp = [f for f in live.icmp if f.role == context.role]
        if live.also is not None:
            also = tuple(r for r in live.also.rules if r.role == context.role)
            live.also = replace(live.also, rules=also)
    required = required_matrix(context.profile, reader, live)
    if reader.per_role:
        for family, name in ((4, "IPv4"), (6, "IPv6")):
            if family not in live.families:
                live.notes.append(f"{name} not audited: the export does not cover it")
    if not live.stateful:
        live.notes.append(
            "the live rules do not let replies through by themselves (no conntrack"
            " ESTABLISHED accept): return traffic is audited as flows of its own"
        )
    traffic = compare(required, live.matrix)
    if live.also is not None and live.also.rules:
        # What passes for INVALID/UNTRACKED packets adds to the excess; what is
        # missing is what a new connection's packets cannot get through.
        wide = replace(live.matrix, rules=live.matrix.rules + live.also.rules)
        traffic = merged(traffic, compare(required, wide))
    essential = _essential_icmp(context.profile, reader, live)
    traffic.changes += _icmp_changes(live.icmp, required, essential)
    forward = None
    if live.forward is not None:
        wanted = forward_required(context.profile, required, live)
        forward = compare(wanted, live.forward)
    acls, acl_notes = None, []
    if "aws_acls" in sources:
        acls, acl_notes, skipped = audit_acls(context.profile, *sources["aws_acls"])
        for entry in skipped:  # not evaluated: the audit cannot say "no difference"
            where, _, what = entry.rpartition(": ")
            live.unknown.append(
                Finding(
                    None,
                    where,
                    f"network ACL {what}",
                    "a protocol other than tcp, udp and all is not evaluated;"
                    " assumed not to match",
                )
            )
    return Audit(
        reader,
        [path for path, _ in sources.values()],
        required,
        live,
        traffic,
        forward,
        acls,
        acl_notes,
    )


def audit_acls(profile, path: str, text: str) -> tuple[TrafficDiff, list, list]:
    """The live network ACLs against the ones generated for the profile: what each
    admits, first match and default deny applied to both by generator.nacl, compared
    by the one semantic diff. Missing: generated admits it, live does not. Also
    returns the notes and the entries not evaluated (file: key path: what)."""
    from .nacl import as_matrix, layer_for
    from .pipeline import shipped_matrix
    from .readers.aws import read_acls

    matrix = shipped_matrix(profile)
    wanted = layer_for(profile, matrix)
    if wanted is None:
        raise ReadError(
            [f"{path}: the profile has no network ACLs (set aws.network_acls: true)"]
        )
    acls, unknown, notes = read_acls(text, path, profile)
    roles = {a.role for a in acls}
    for acl in wanted.acls:
        if acl.role not in roles:
            notes.append(f"no live network ACL tagged rulegen:role={acl.role}")
    kept = replace(wanted, acls=tuple(a for a in wanted.acls if a.role in roles))
    live = replace(wanted, acls=tuple(acls))
    return compare(as_matrix(kept, matrix), as_matrix(live, matrix)), notes, unknown


def forward_required(profile, required: Matrix, live: Live) -> Matrix:
    """What must reach the role's containers through DNAT, by the original port: its
    ingress rules (the page's and the site's; not the host essentials, nor stateless
    return rules: the forward path tracks connections), and on Kubernetes nodes what
    the pods send to pods and services (which kube-proxy DNATs)."""
    space = subtract(family_space(live.forward_families), LOOPBACK_SPACE)
    rules = [
        r
        for r in required.rules
        if r.direction == "ingress"
        and not r.is_return
        and r.reference != hostfw.ESSENTIALS
    ]
    for role in live.roles:
        pods = hostfw.essentials_for(profile, role).pods
        if pods:
            what = "Pods to pods and to services (network.pod_cidrs, service_cidrs)"
            peer = Peer(cidrs=tuple(pods), name="pod_cidrs")
            rules.append(
                Rule(role, "ingress", "all", None, peer, what, hostfw.ESSENTIALS, "")
            )
    kept = [c for c in (_clip(r, space) for r in rules) if c is not None]
    return replace(required, rules=tuple(kept))


def _essential_icmp(profile, reader: Reader, live: Live) -> dict:
    """(role, direction) -> the ICMP a host target's essentials allow: (peer
    interval, type interval) boxes."""
    from .emitters import TARGETS

    if not TARGETS[reader.target].host_firewall:
        return {}
    stateful = live.stateful or profile.stateful
    return {
        (role, direction): boxes
        for role in live.roles
        for direction, boxes in essential_rules(profile, role, stateful)[1].items()
    }


def _icmp_changes(findings, required: Matrix, essential: dict) -> list[Change]:
    """ICMP compared by type: what each live rule allows beyond a required
    all-protocol rule and the host essentials is excess, named with that rule."""
    out = []
    for f in findings:
        covered = [
            (iv, ICMP_TYPES[0])
            for r in required.rules
            if (r.role, r.direction, r.protocol) == (f.role, f.direction, "all")
            for c in r.peer.cidrs
            for iv in address_intervals(c)
        ]
        covered += essential.get((f.role, f.direction), [])
        pieces = []
        for types, peers in icmp_beyond(f.icmp, covered):
            for family, name in ((4, "icmp"), (6, "icmpv6")):
                mine = intersect(peers, family_space((family,)))
                if mine:
                    pieces.append(Piece(name, types, None, Peer(cidrs=cidrs(mine))))
        if pieces:
            out.append(Change(f.role, f.direction, "added", pieces, [f.text], [], []))
    return out


# --- rendering ------------------------------------------------------------------


def _summary(a: Audit) -> str:
    if not a.different:
        return "no difference: the live rules allow exactly the profile's flows"
    if a.live.unknown and not (a.missing or a.excess):
        return (
            f"0 missing, 0 excess, {len(a.live.unknown)} not evaluated: the reader"
            " cannot say what these allow, so the audit cannot say there is no"
            " difference"
        )
    essentials = sum(map(_essential, a.missing))
    of_them = f" ({essentials} of them host essentials)" if essentials else ""
    return (
        f"{len(a.missing)} missing{of_them}, {len(a.excess)} excess,"
        f" {len(a.live.unknown)} not evaluated"
    )


def _title(a: Audit) -> str:
    m = a.required
    roles = ", ".join(a.live.roles)
    return (
        f"rulegen audit: {m.profile} {m.server_version} ({m.release_line} page)"
        f" against {a.reader.name} ({roles})"
    )


FORWARD_TITLE = "through DNAT (forward path, by the original port)"


def _groups(a: Audit):
    """(role, title, direction, changes, live matrix): the host's, then the forward
    path's (whose changes speak of ingress)."""
    for role in ROLES:
        for direction in DIRECTIONS:
            changes = [
                c
                for c in a.traffic.changes
                if (c.role, c.direction) == (role, direction)
            ]
            if changes:
                yield role, direction, direction, changes, a.live.matrix
        changes = [c for c in a.forward_changes if c.role == role]
        if changes:
            yield role, FORWARD_TITLE, "ingress", changes, a.live.forward


def _shown(piece, direction: str) -> str:
    """A piece in words, its addresses as readers.engine.peer_text prints them."""
    text = piece_text(piece, direction)
    if piece.protocol in ("icmp", "icmpv6"):  # ports: the ICMP types
        family = 4 if piece.protocol == "icmp" else 6
        side = "from" if direction == "ingress" else "to"
        what = f"{piece.protocol} {icmp_type_text(piece.ports, family)}"
        text = f"{what} {side} {text.rsplit(f' {side} ', 1)[1]}"
    if piece.peer.cidrs:
        ivs = [iv for c in piece.peer.cidrs for iv in address_intervals(c)]
        side = "from" if direction == "ingress" else "to"
        head = text.rsplit(f" {side} ", 1)[0]
        text = f"{head} {side} {peer_text(ivs, piece.peer.name)}"
    return text


SHOWN = 8  # pieces of one change in text and markdown; json lists them all


def _lines(change, direction: str, live: Matrix | None = None) -> list[str]:
    lines = [_shown(p, direction) for p in change.traffic]
    if len(lines) > SHOWN and live is not None and change.kind in EXCESS:
        # A broad rule less the required flows reads as many small pieces: say what
        # the rule allows, and that the required flows are taken out.
        own = [
            _shown(Piece(r.protocol, r.ports, r.source_ports, r.peer), direction)
            for r in live.rules
            if (r.role, r.direction) == (change.role, change.direction)
            and r.purpose in change.purposes
            and r.protocol in {p.protocol for p in change.traffic}
        ]
        if own and len(own) < len(lines):
            lines = [f"{line}, less the required flows" for line in own]
    if len(lines) > SHOWN:
        more = len(lines) - SHOWN + 1
        lines = lines[: SHOWN - 1] + [f"... and {more} more (--format json lists all)"]
    return lines


def _who(finding) -> str:
    return f"{ROLE_TITLES[finding.role]}: " if finding.role else ""


def _essential(change) -> bool:
    """A required flow that only the host essentials stand behind."""
    return change.kind in MISSING and set(change.references) == {hostfw.ESSENTIALS}


def _label(change) -> str:
    if change.kind not in MISSING:
        return "excess"
    return "missing essential" if _essential(change) else "missing"


def render_text(a: Audit) -> str:
    out = [_title(a)] + [f"  source: {s}" for s in a.sources]
    out += ["", f"Result: {_summary(a)}"]
    partly = {"narrowed": " (partly)", "widened": " (partly)"}
    labels = [
        _label(c) + partly.get(c.kind, "")
        for c in a.traffic.changes + a.forward_changes
    ]
    w = max([17] + [len(label) + 1 for label in labels])
    for role, title, direction, changes, live in _groups(a):
        out += ["", f"{ROLE_TITLES[role]} - {title}"]
        for change in changes:
            lines = _lines(change, direction, live)
            label = _label(change) + partly.get(change.kind, "")
            out.append(f"  {label:<{w}}{lines[0]}")
            out += [f"  {'':<{w}}{line}" for line in lines[1:]]
            if change.kind in MISSING:
                out += [f"  {'':<{w + 2}}why: {p}" for p in change.purposes]
                out += [f"  {'':<{w + 2}}ref: {r}" for r in change.references]
            else:
                out += [f"  {'':<{w + 2}}allowed by: {p}" for p in change.purposes]
    out += _acl_lines(a)
    if a.live.unknown:
        out += ["", "Not evaluated (the reader cannot say what these do):"]
        out += [f"  {_who(f)}{f.where}: {f.text}\n    {f.why}" for f in a.live.unknown]
    if a.live.notes:
        out += ["", "Notes:"] + [f"  {n}" for n in a.live.notes]
    return "\n".join(out) + "\n"


def _acl_lines(a: Audit) -> list[str]:
    if a.acls is None:
        return []
    out = ["", f"Network ACLs: {len(a.acl_changes)} difference(s) in what they admit"]
    for change in a.acl_changes:
        side = "inbound" if change.direction == "ingress" else "outbound"
        label = "missing" if change.kind in MISSING else "excess"
        out.append(f"  {ROLE_TITLES[change.role]} {side}:")
        for line in _lines(change, change.direction):
            out.append(f"    {label:<8}{line}")
        key = "wanted by" if change.kind in MISSING else "admitted by"
        out += [f"{'':14}{key}: {p}" for p in change.purposes]
    out += [f"  {n}" for n in a.acl_notes or []]
    return out


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(a: Audit) -> str:
    out = [f"### {_title(a)}", "", f"**{_summary(a)}**"]
    for role, title, direction, changes, live in _groups(a):
        out += ["", f"#### {ROLE_TITLES[role]} - {title}", ""]
        out += ["| finding | traffic | why / allowed by | page reference |"]
        out += ["|---|---|---|---|"]
        for change in changes:
            label = _label(change)
            if change.kind in ("narrowed", "widened"):
                label += " (partly)"
            refs = change.references if change.kind in MISSING else []
            cells = [
                f"**{label}**",
                "<br>".join(_cell(line) for line in _lines(change, direction, live)),
                "<br>".join(_cell(p) for p in change.purposes),
                "<br>".join(_cell(r) for r in refs),
            ]
            out.append("| " + " | ".join(cells) + " |")
    if a.live.unknown:
        out += ["", "Not evaluated:", ""]
        out += [f"- `{f.where}`: `{_cell(f.text)}`: {f.why}" for f in a.live.unknown]
    if a.live.notes:
        out += ["", "Notes:", ""] + [f"- {n}" for n in a.live.notes]
    return "\n".join(out) + "\n"


def report_dict(a: Audit) -> dict:
    def change(c) -> dict:
        data = c.to_dict()
        data["finding"] = "missing" if c.kind in MISSING else "excess"
        data["essential"] = _essential(c)
        data["partly"] = c.kind in ("narrowed", "widened")
        data.pop("breaking")
        if c.kind in EXCESS:
            data["allowed_by"] = data.pop("purposes")
            data.pop("references")
            data.pop("flows")
        for piece in data["traffic"]:
            if piece["protocol"] in ("icmp", "icmpv6"):  # ports: the ICMP types
                piece["icmp_types"] = piece.pop("ports")
        return data

    return {
        "format": 1,
        "profile": a.required.profile,
        "server_version": a.required.server_version,
        "release_line": a.required.release_line,
        "reader": a.reader.name,
        "sources": a.sources,
        "roles": list(a.live.roles),
        "families": list(a.live.families),
        "different": a.different,
        "counts": {
            "missing": len(a.missing),
            "missing_essentials": sum(map(_essential, a.missing)),
            "excess": len(a.excess),
            "not_evaluated": len(a.live.unknown),
        },
        "missing": [
            change(c)
            for c in a.missing
            if c not in a.forward_changes and c not in a.acl_changes
        ],
        "excess": [
            change(c)
            for c in a.excess
            if c not in a.forward_changes and c not in a.acl_changes
        ],
        # through DNAT, by the original port (host readers; null where not read)
        "forward": (
            None
            if a.forward is None
            else {
                "missing": [change(c) for c in a.forward_changes if c.kind in MISSING],
                "excess": [change(c) for c in a.forward_changes if c.kind in EXCESS],
            }
        ),
        "network_acls": (
            None
            if a.acls is None
            else {
                "missing": [change(c) for c in a.acl_changes if c.kind in MISSING],
                "excess": [change(c) for c in a.acl_changes if c.kind in EXCESS],
                "notes": a.acl_notes,
            }
        ),
        "not_evaluated": [f.to_dict() for f in a.live.unknown],
        "notes": a.live.notes,
    }


def render(a: Audit, fmt: str) -> str:
    if fmt == "json":
        import json

        return json.dumps(report_dict(a), indent=2) + "\n"
    return {"text": render_text, "markdown": render_markdown}[fmt](a)
