"""Planner: profile + catalog -> the complete rule matrix.

Every flow between two roles yields the egress rule on its source and the ingress rule
on its destination, so the two ends can never disagree.
"""

from __future__ import annotations

from .catalog import Catalog, Flow, load_catalog, version_key
from .matrix import ROLES, Matrix, Rule, port_text
from .paths import Paths, join_via
from .profile import Profile


def plan(profile: Profile, catalog: Catalog | None = None) -> Matrix:
    catalog = catalog or load_catalog()
    line = catalog.line_of(profile.server_version)
    rules: list[Rule] = []
    notes: list[str] = []
    for flow in catalog.flows:
        status = flow.status(line)
        if status is None or not _applies(flow, profile):
            continue
        if flow.note(line):
            notes.append(flow.note(line))
        if status == "obsolete" and not profile.include_obsolete:
            notes.append(obsolete_note(flow, line))
            continue
        _add_rules(rules, notes, flow, profile, catalog, line, status == "obsolete")
        for since, text in sorted(flow.caution.items()):
            note = f"caution (from {since}): {text}"
            if (
                version_key(profile.server_version) >= version_key(since)
                and note not in notes
            ):
                notes.append(note)
    warnings = list(profile.warnings) + eks_cluster_warnings(profile)
    page_rules = list(rules)
    hooks = paths_of(profile).webhooks_flow()
    for flow in ((hooks,) if hooks else ()) + tuple(profile.site_flows):
        site_rules: list[Rule] = []
        _add_rules(site_rules, notes, flow, profile, catalog, line, False)
        rules.extend(_beyond_page(flow, site_rules, page_rules, warnings))
        if flow.acknowledge_isolation:
            notes.append(
                f"{_flow_label(flow)}: opens traffic the page forbids between two instances of"
                " one role (acknowledge_isolation: true)"
            )
    warnings += [w for w in paths_of(profile).warnings if w not in warnings]
    if not profile.stateful:
        rules.extend(_return_rule(r, profile.ephemeral_ports) for r in list(rules))
    if profile.lb_internet_facing:
        notes.append(
            "internet-facing load balancer: the Nomad clients reach it on its public"
            " address, so its ingress from them comes from "
            + (
                "peers.nomad_client_public_ips"
                if profile.peers["nomad_client_public_ips"]
                else "network.nat_gateway_ips"
            )
            + " and their egress goes to "
            + ("load_balancer.public_ips" if profile.lb_public_ips else "0.0.0.0/0")
        )
    notes += paths_of(profile).notes()
    if profile.transparent_lb:
        notes.append(
            "transparent load balancer: its ingress rules apply to the Kubernetes nodes,"
            " and the NodePort rules are not needed"
        )
    return Matrix(
        profile=profile.name,
        server_version=profile.server_version,
        release_line=line,
        cloud=profile.cloud,
        stateful=profile.stateful,
        rules=_merge(rules),
        warnings=tuple(warnings),
        notes=tuple(notes),
    )


EKS_CLUSTER_EGRESS = (
    "aws.existing_groups.kubernetes_nodes: eks_cluster: the nodes' egress rules go into"
    " the EKS cluster security group, whose allow-all egress (0.0.0.0/0) stays, so in"
    " AWS they restrict nothing. Give the node group a security group of its own and"
    " pass that in instead (no existing_groups), or accept the open egress knowingly"
    " (removing that rule also cuts the control plane's network interfaces, which carry"
    " the same group)"
)


def eks_cluster_warnings(profile: Profile) -> list[str]:
    """A passed-in group whose own rules undo what the matrix asks of it."""
    existing = (profile.aws or {}).get("existing_groups", {})
    return (
        [EKS_CLUSTER_EGRESS]
        if existing.get("kubernetes_nodes") == "eks_cluster"
        else []
    )


def _add_rules(rules, notes, flow, profile, catalog, line, obsolete) -> None:
    for rule in _expand(flow, profile, catalog, line, obsolete):
        if rule.peer.role or rule.peer.cidrs:
            rules.append(rule)
            continue
        # An empty peer list means "nobody": no rule (an empty source would mean
        # "anywhere" to some engines).
        note = f"{flow.id}: no rule, the {rule.peer.name} peer list is empty"
        if note not in notes:
            notes.append(note)


def _beyond_page(flow: Flow, site_rules, page_rules, warnings) -> list[Rule]:
    """The site flow's rules the page does not already require; a warning names the
    page flow behind each one left out."""
    from .optimizer import covers

    cache: dict = {}
    kept = []
    by_side: dict[tuple, list[Rule]] = {}  # a rule covers only its own role's side
    for p in page_rules:
        by_side.setdefault((p.role, p.direction), []).append(p)
    for rule in site_rules:
        side_rules = by_side.get((rule.role, rule.direction), ())
        page = next((p for p in side_rules if covers(p, rule, cache)), None)
        if page is None:
            kept.append(rule)
            continue
        side = "from" if rule.direction == "ingress" else "to"
        warning = (
            f"{_flow_label(flow)}: the page already requires"
            f" {rule.role} {rule.direction} {rule.protocol}/{port_text(rule.ports)}"
            f" {side} {rule.peer.label} (page flow {page.flow}: {page.purpose});"
            " the site flow adds no rule for it"
        )
        if warning not in warnings:
            warnings.append(warning)
    return kept


def _flow_label(flow: Flow) -> str:
    return flow.key if flow.id == flow.key else f"{flow.key} ({flow.id})"


def _applies(flow: Flow, profile: Profile) -> bool:
    when = flow.when
    if "transparent_lb" in when and when["transparent_lb"] != profile.transparent_lb:
        return False
    if "ssh_admin" in when and when["ssh_admin"] != bool(profile.peers["ssh_admin"]):
        return False
    for key in ("nomad_servers", "container_runtime"):
        if key in when and when[key] != getattr(profile, key):
            return False
    return True


def _present(end: str, profile: Profile) -> bool:
    """Is this end part of the install? (Profile.roles: the Nomad servers are a role
    only outside the cluster.)"""
    return end not in ROLES or end in profile.roles()


def _expand(flow: Flow, profile: Profile, catalog: Catalog, line: str, obsolete: bool):
    title = " ".join(flow.document.split()) if flow.document else catalog.title(line)
    purpose = flow.purpose_by_line.get(line, flow.purpose)
    site = dict(site=True) if flow.site else {}
    routes = paths_of(profile)
    for source in flow.sources:
        for destination in flow.destinations:
            if not (_present(source, profile) and _present(destination, profile)):
                continue
            if source == destination and source in catalog.isolated_roles:
                if not flow.acknowledge_isolation:
                    continue
            for protocol in flow.protocols:
                for ports in flow.ports_for(line) or (None,):
                    for leg in routes.legs(flow, source, destination, ports):
                        yield Rule(
                            role=leg.role,
                            direction=leg.direction,
                            peer=leg.peer,
                            protocol=protocol,
                            ports=leg.ports,
                            purpose=purpose,
                            reference=_reference(title, flow, line, leg.direction)
                            + leg.suffix,
                            flow=flow.id,
                            obsolete=obsolete,
                            via=leg.via,
                            **site,
                        )


def paths_of(profile: Profile) -> Paths:
    """The profile's path stage (generator/paths.py), made once per profile."""
    found = _PATHS.get(id(profile))
    if found is None or found[0] is not profile:
        found = _PATHS[id(profile)] = (profile, Paths(profile))
        if len(_PATHS) > 64:
            _PATHS.pop(next(iter(_PATHS)))
    return found[1]


_PATHS: dict = {}


def obsolete_note(flow: Flow, line: str) -> str:
    """Why a flow the page still half prints is left out (diff and explain read it)."""
    return (
        f"{flow.id}: left out, the {line} page still prints one end but its own egress"
        f" tables drop it ({flow.dropped_by(line)}); include_obsolete: true keeps it"
    )


def _reference(title: str, flow: Flow, line: str, end: str) -> str:
    """The page section behind one end (where a path moved the rule, the leg adds)."""
    if flow.site:
        # Never "; ": merged rules join their references with it.
        return f"Site flow {flow.id}" + (
            f": {flow.reference}" if flow.reference else ""
        )
    refs = flow.refs_for(line)
    section = refs.get(end)
    if section is None:
        other = "egress" if end == "ingress" else "ingress"
        section = f"{refs[other]} (other end of the flow)"
    return f"{title} > {section}"


def _return_rule(rule: Rule, ephemeral: tuple[int, int]) -> Rule:
    if rule.protocol == "all":
        return rule  # already allows both ways; merged away below
    return Rule(
        role=rule.role,
        direction="egress" if rule.direction == "ingress" else "ingress",
        protocol=rule.protocol,
        ports=tuple(ephemeral),
        source_ports=rule.ports,
        peer=rule.peer,
        purpose=f"Return traffic: {rule.purpose}",
        reference=rule.reference,
        flow=rule.flow,
        obsolete=rule.obsolete,
        site=rule.site,
        via=rule.via,
    )


def _merge(rules: list[Rule]) -> tuple[Rule, ...]:
    """One rule per distinct traffic; purposes of equal rules are joined."""
    merged: dict[tuple, Rule] = {}
    for rule in rules:
        key = rule.traffic_key()
        if key not in merged:
            merged[key] = rule
            continue
        old = merged[key]
        if rule.purpose in old.purpose.split("; "):
            continue
        merged[key] = Rule(
            **{
                **old.__dict__,
                "purpose": f"{old.purpose}; {rule.purpose}",
                "reference": f"{old.reference}; {rule.reference}",
                "flow": f"{old.flow}+{rule.flow}",
                "obsolete": old.obsolete and rule.obsolete,
                "site": old.site and rule.site,
                "via": join_via((old.via, rule.via)),
            }
        )
    return tuple(sorted(merged.values(), key=Rule.sort_key))
