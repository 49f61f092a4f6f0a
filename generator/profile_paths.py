"""The profile's path settings: the balancer's kind, an egress proxy, where webhooks
come from, EKS custom pod networking. Read and checked here; generator/paths.py says
what they mean for the addresses each firewall sees.

`balancer_kind` runs before the rest of the profile is read: the kind decides whether
the balancer has a firewall of its own, which every other check reads as
`load_balancer.transparent`.
"""

from __future__ import annotations

KINDS = {"aws": ("clb", "nlb"), "gcp": ("passthrough", "proxy")}
NLB_ONLY = ("targets", "security_group", "preserve_client_ip")
ANYWHERE = ("0.0.0.0/0", "::/0")


def has_firewall(lb: dict) -> bool:
    """Does a balancer of this kind carry rules of its own (a security group)?"""
    kind = lb.get("kind")
    return kind == "clb" or (kind == "nlb" and bool(lb.get("security_group", False)))


def balancer_kind(data: dict, source) -> tuple[None, object]:
    """load_balancer.kind against the cloud and the other balancer keys; sets
    load_balancer.transparent from the kind when the file does not say it (a key
    in the file has a line; a schema default has none)."""
    found = source.findings()
    error = found.error

    def written(path) -> bool:
        return path in source.lines

    lb = data.get("load_balancer")
    if not isinstance(lb, dict):
        return None, found
    kind, cloud = lb.get("kind"), data.get("cloud")
    if kind is None:
        for key in NLB_ONLY + ("proxy_ranges",):
            if written(("load_balancer", key)):
                error(("load_balancer", key), "needs load_balancer.kind")
        return None, found
    allowed = KINDS.get(cloud, ())
    if kind not in allowed:
        error(
            ("load_balancer", "kind"),
            f"{kind!r} is not a balancer kind of cloud: {cloud}; expected"
            f" {' or '.join(allowed) if allowed else 'none on cloud: generic'}",
        )
        return None, found
    for key in NLB_ONLY:
        if written(("load_balancer", key)) and kind != "nlb":
            error(("load_balancer", key), f"applies to kind: nlb, not {kind}")
    if written(("load_balancer", "proxy_ranges")) and kind != "proxy":
        error(("load_balancer", "proxy_ranges"), f"applies to kind: proxy, not {kind}")
    transparent = not has_firewall(lb)
    if written(("load_balancer", "transparent")) and lb["transparent"] != transparent:
        why = (
            "has a security group of its own"
            if not transparent
            else "has no firewall of its own"
        )
        error(
            ("load_balancer", "transparent"),
            f"{str(lb['transparent']).lower()} contradicts kind: {kind}"
            + (
                " with security_group: true"
                if kind == "nlb" and not transparent
                else ""
            )
            + f" (it {why}); leave transparent out, the kind decides it",
        )
    lb["transparent"] = transparent
    return None, found


def read_paths(data: dict, profile, source) -> tuple[dict, object]:
    """The path settings as the Profile's fields (lb, egress_proxy, webhooks)."""
    found = source.findings()
    error, warn, cidrs = found.error, found.warn, found.cidrs
    lb_in = data.get("load_balancer", {})
    lb = {k: v for k, v in lb_in.items() if k in ("kind",) + NLB_ONLY}
    if "proxy_ranges" in lb_in:
        lb["proxy_ranges"] = cidrs(
            ("load_balancer", "proxy_ranges"), lb_in["proxy_ranges"]
        )
    out = {"lb": lb, "egress_proxy": {}, "webhooks": {}}
    if lb.get("kind") == "nlb" and not has_firewall(lb):
        if not profile.subnets.get("load_balancer"):
            error(
                ("network", "subnets", "load_balancer"),
                "missing: a Network Load Balancer without a security group reaches"
                " its targets (health checks, and traffic when it does not keep the"
                " client's address) from its private addresses; list its subnets",
            )
    proxy = data.get("egress_proxy")
    if proxy:
        out["egress_proxy"] = {
            "addresses": cidrs(("egress_proxy", "addresses"), proxy["addresses"]),
            "port": proxy["port"],
        }
        written = data.get("peers", {}).get("internet")
        if written is not None and tuple(written) not in ((), ("0.0.0.0/0",)):
            warn(
                ("peers", "internet"),
                "ignored: egress_proxy carries all HTTP and HTTPS to the internet",
            )
    hooks = data.get("webhooks")
    if hooks:
        out["webhooks"] = {
            "from": hooks["from"],
            "cidrs": cidrs(("webhooks", "cidrs"), hooks["cidrs"]),
        }
    _check_webhooks(profile, out["webhooks"], warn)
    if (profile.aws or {}).get("custom_pod_networking") and not profile.pod_cidrs:
        error(
            ("network", "pod_cidrs"),
            "missing: aws.custom_pod_networking gives pods addresses of their own;"
            " list the pod subnets (the ENIConfig subnets' ranges)",
            near=("aws", "custom_pod_networking"),
        )
    return out, found


def uncovered(cidrs, covering) -> list[str]:
    """The blocks of `cidrs` that `covering` does not hold whole."""
    from bisect import bisect_right

    from .optimizer import collapse, parse_cidr

    spans = collapse(covering)[1]  # merged, sorted, per family
    starts = tuple([first for first, _ in family] for family in spans)
    out = []
    for text in cidrs:
        version, first, last = parse_cidr(text)
        family = 0 if version == 4 else 1
        # The merged interval starting at or before `first`, if any, must reach last.
        i = bisect_right(starts[family], first) - 1
        if i < 0 or spans[family][i][1] < last:
            out.append(text)
    return out


def _check_webhooks(profile, hooks: dict, warn) -> None:
    external = profile.peers["external"]
    if hooks:
        missing = uncovered(hooks["cidrs"], external)
        if missing:
            what = "the VCS's hook ranges" if hooks["from"] == "vcs" else "the relay"
            warn(
                ("webhooks", "cidrs"),
                f"peers.external does not cover {what} ({', '.join(missing[:3])}"
                f"{', ...' if len(missing) > 3 else ''}): a rule of its own lets"
                " them reach 443 on the load balancer, beyond peers.external",
            )
        return
