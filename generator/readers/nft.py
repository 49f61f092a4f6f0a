"""nftables (`nft -j list ruleset`) read with nftables' own evaluation.

Every filter base chain on the input hook (ingress) or the output hook (egress) of
a table whose family covers the packet (inet and ip for IPv4, inet and ip6 for
IPv6) sees the packet, in priority order: a drop anywhere is final, an accept only
ends that base chain, and a chain's policy decides what falls off its end; no base
chain at a hook means the kernel accepts. Inside a chain, jump, goto and return
work as in iptables (the same runner). Matches on the packet's protocol, addresses
(prefixes, ranges, anonymous and named sets), ports, interfaces, conntrack state
and ICMP are evaluated; anything else is reported and assumed not to match.
`th dport` (any transport header) is read as TCP and UDP. A verdict map on the
family (`meta nfproto vmap`, rulegen's dispatch) is settled per family. The forward
hook is read for a new connection that reaches a container through DNAT, by its
original destination port (`ct status dnat`, `ct original proto-dst`).
"""

from __future__ import annotations

import json

from . import Live, ReadError, load_json
from ..records import dataclass
from .engine import (
    ICMP,
    TCP,
    UDP,
    Assembly,
    ChainEntry,
    HostSide,
    Match,
    Unknown,
    address_intervals,
    chain_findings,
    evaluate,
    family_space,
    full_match,
    icmp_type,
    intersect,
    odd_describe,
    odd_matches,
    odd_only,
    range_intervals,
    reachable_chains,
    replies_pass,
    run_chain,
    settle,
    subnet_space,
)

HOOKS = {"ingress": "input", "egress": "output", "forward": "forward"}
# iptables' ! --syn: a TCP packet that opens no connection (stateless replies)
REPLY_FLAGS = (["fin", "syn", "rst", "ack"], "syn")
TABLE_FAMILIES = {4: ("ip", "inet"), 6: ("ip6", "inet")}
PROTOCOLS = {"tcp": TCP, "6": TCP, "udp": UDP, "17": UDP}
ICMP_NAMES = {4: ("icmp", "1"), 6: ("ipv6-icmp", "icmpv6", "58")}
CONTINUE = frozenset({"counter", "log", "meta", "mangle", "notrack", "ct"})
FAMILY_NAMES = {4: "ipv4", 6: "ipv6"}
VERDICTS = {"accept": "accept", "drop": "drop", "reject": "drop", "return": "return"}


def _load(text: str, path: str) -> list[dict]:
    data = load_json(text, path)
    if not isinstance(data, dict) or not isinstance(data.get("nftables"), list):
        raise ReadError(
            [f'{path}: expected {{"nftables": [...]}} (nft -j list ruleset)']
        )
    items = data["nftables"]
    problems = []
    for i, item in enumerate(items):
        if not isinstance(item, dict) or len(item) != 1:
            problems.append(f"{path}: nftables[{i}]: expected one object per item")
            continue
        ((kind, body),) = item.items()
        if kind in ("table", "chain", "rule", "set") and not isinstance(body, dict):
            problems.append(f"{path}: nftables[{i}].{kind}: expected an object")
        elif kind == "rule" and not isinstance(body.get("expr"), list):
            problems.append(f"{path}: nftables[{i}].rule: no expr list")
        elif kind in ("chain", "rule", "set") and not all(
            isinstance(body.get(k), str) for k in ("family", "table")
        ):
            problems.append(f"{path}: nftables[{i}].{kind}: needs family and table")
    if problems:
        raise ReadError(problems)
    return items


def _key(body: dict, name: str) -> str:
    return f"{body['family']} {body['table']} {name}"


def _value_text(value) -> str:
    if isinstance(value, dict):
        if "prefix" in value:
            return f"{value['prefix']['addr']}/{value['prefix']['len']}"
        if "range" in value:
            return "-".join(str(v) for v in value["range"])
        if "set" in value:
            return "{ " + ", ".join(_value_text(v) for v in value["set"]) + " }"
        return json.dumps(value)
    if isinstance(value, list):
        return ",".join(_value_text(v) for v in value)
    return str(value)


def _left_text(left) -> str:
    if isinstance(left, dict):
        if "payload" in left:
            return f"{left['payload'].get('protocol')} {left['payload'].get('field')}"
        if "meta" in left:
            return f"meta {left['meta'].get('key')}"
        if "ct" in left:
            return f"ct {left['ct'].get('key')}"
    return json.dumps(left)


def rule_text(expr: list) -> str:
    """The rule in nft's words, near enough to recognise it."""
    out = []
    for e in expr:
        if not isinstance(e, dict) or len(e) != 1:
            out.append(json.dumps(e))
            continue
        ((kind, body),) = e.items()
        if kind == "match" and isinstance(body, dict):
            op = body.get("op", "==")
            op = "" if op in ("==", "in") else f"{op} "
            out.append(
                f"{_left_text(body.get('left'))} {op}{_value_text(body.get('right'))}"
            )
        elif kind in ("jump", "goto") and isinstance(body, dict):
            out.append(f"{kind} {body.get('target')}")
        elif kind == "counter":
            out.append("counter")
        else:
            out.append(kind)
    return " ".join(out)


def _elements(right) -> list:
    """The elements of an anonymous set, or the one value."""
    return right["set"] if isinstance(right, dict) and "set" in right else [right]


def _entry_text(body: dict) -> str:
    text = rule_text(body["expr"])
    if body.get("comment"):
        text += f' comment "{body["comment"]}"'
    return text


def _values(right, body, kind: str, sets) -> list[tuple[int, int]]:
    """A match's right-hand side as intervals: addresses or numbers."""
    if isinstance(right, str) and right.startswith("@"):
        key = _key(body, right[1:])
        if key not in sets:
            raise Unknown(f"set {right[1:]} is not in the ruleset")
        elems = sets[key]
        if elems is None:
            raise Unknown(f"set {right[1:]}: only address and port sets are read")
        return [iv for el in elems for iv in _values(el, body, kind, sets)]
    if isinstance(right, dict) and "set" in right:
        return [iv for el in right["set"] for iv in _values(el, body, kind, sets)]
    if isinstance(right, dict) and "elem" in right:
        return _values(right["elem"].get("val"), body, kind, sets)
    try:
        if kind == "address":
            if isinstance(right, dict) and "prefix" in right:
                p = right["prefix"]
                return address_intervals(f"{p['addr']}/{p['len']}")
            if isinstance(right, dict) and "range" in right:
                return range_intervals(*map(str, right["range"]))
            return address_intervals(str(right))
        if isinstance(right, dict) and "range" in right:
            lo, hi = (int(v) for v in right["range"])
            return [(lo, hi)]
        return [(int(right), int(right))]
    except (ValueError, TypeError, KeyError):
        raise Unknown(f"value {json.dumps(right)[:60]} is not evaluated")


def _compare(op, values, top):
    if op in ("==", "!=", "in"):
        return values
    v = values[0][0]
    return {
        "<": [(0, v - 1)],
        "<=": [(0, v)],
        ">": [(v + 1, top)],
        ">=": [(v, top)],
    }[op]


def _protocols(right, family: int) -> list[tuple[int, int]]:
    """The protocol axis that a protocol match (l4proto, ip protocol) names."""
    values = []
    for name in _elements(right):
        name = str(name).lower()
        if name in PROTOCOLS:
            values.append((PROTOCOLS[name], PROTOCOLS[name]))
        elif name in ICMP_NAMES[family]:
            values.append((ICMP, ICMP))
        elif name in ICMP_NAMES[10 - family]:
            continue  # the other family's ICMP
        else:
            raise Unknown(
                f"protocol {name}: the matrix speaks of tcp, udp and all only"
            )
    return values


def _vmap_verdict(arg, family: int):
    """A verdict map on the family (`meta nfproto vmap { ipv4 : jump ... }`).

    Settled per family like an nfproto match: the family's (key, verdict) pair,
    or None when the map has none for the family (the rule does not match).
    """
    key = arg.get("key") if isinstance(arg, dict) else None
    data = arg.get("data") if isinstance(arg, dict) else None
    if not (isinstance(key, dict) and key.get("meta", {}).get("key") == "nfproto"):
        raise Unknown("verdict map on anything but meta nfproto")
    pairs = data.get("set") if isinstance(data, dict) else None
    if not isinstance(pairs, list):
        raise Unknown("verdict map without its elements")
    name = FAMILY_NAMES[family]
    for pair in pairs:
        if not (isinstance(pair, list) and len(pair) == 2):
            raise Unknown("verdict map element is not a key and a verdict")
        if pair[0] == name:
            return pair
    return None


def _ct_state(left, right, negate, entry: ChainEntry, side: HostSide) -> bool:
    key = left["ct"].get("key")
    if key == "status" and "dnat" in _elements(right):
        # only the forward path is read for DNAT'd traffic
        return side.forward != negate
    if key != "state":
        raise Unknown(f"ct {key}")
    states = right if isinstance(right, list) else [right]
    if isinstance(right, dict) and "set" in right:
        states = right["set"]
    return side.states(entry, {str(s).upper() for s in states}, negate)


def _reply_flags(left, op, right) -> bool:
    """`tcp flags & (fin | syn | rst | ack) != syn`: rulegen's replies-only match."""
    operands = left["&"]
    payload = operands[0].get("payload", {}) if isinstance(operands[0], dict) else {}
    return (
        (payload.get("protocol"), payload.get("field")) == ("tcp", "flags")
        and op == "!="
        and sorted(operands[1]) == sorted(REPLY_FLAGS[0])
        and right == REPLY_FLAGS[1]
    )


class RuleReader(HostSide):
    """One rule of the ruleset into an entry with the match it makes."""

    def __init__(self, direction, family, sets, local, interface):
        super().__init__(direction, family, local, interface)
        self.sets = sets

    def entry(self, body: dict, where: str) -> ChainEntry:
        chain, text = _key(body, body["chain"]), _entry_text(body)
        entry = ChainEntry(chain, where, text, full_match((self.family,)))

        def read_matches() -> bool:
            holds = True
            for e in body["expr"]:
                holds &= self._expr(e, entry.match, entry, body)
            return holds

        return self.finish(settle(entry, self.family, read_matches))

    def _expr(self, e, m: Match, entry: ChainEntry, body: dict) -> bool:
        if not isinstance(e, dict) or len(e) != 1:
            raise Unknown(f"expression {json.dumps(e)[:60]}")
        ((kind, arg),) = e.items()
        if kind == "match":
            return self._match(arg, m, entry, body)
        if kind in VERDICTS:
            entry.action = VERDICTS[kind]
            return True
        if kind in ("jump", "goto"):
            entry.action, entry.target = kind, _key(body, arg["target"])
            return True
        if kind in CONTINUE:
            return True
        if kind == "vmap":
            pair = _vmap_verdict(arg, self.family)
            if pair is None:
                return False
            return self._expr(pair[1], full_match((self.family,)), entry, body)
        raise Unknown(f"statement {kind!r} is not evaluated")

    def _match(self, arg, m: Match, entry: ChainEntry, body: dict) -> bool:
        if not isinstance(arg, dict):
            raise Unknown("match without operands")
        op, left, right = arg.get("op", "=="), arg.get("left"), arg.get("right")
        negate = op == "!="
        if op not in ("==", "!=", "in", "<", ">", "<=", ">="):
            raise Unknown(f"operator {op}")
        if isinstance(left, dict) and "payload" in left:
            return self._payload(left["payload"], op, right, m, body)
        if isinstance(left, dict) and "meta" in left:
            return self._meta(left["meta"].get("key"), right, negate, m)
        if isinstance(left, dict) and "ct" in left:
            ct = left["ct"]
            if (ct.get("key"), ct.get("dir")) == ("proto-dst", "original"):
                if not self.forward:
                    raise Unknown("ct original proto-dst outside the forward hook")
                values = _compare(op, _values(right, body, "port", self.sets), 65535)
                m.restrict("dport", values, negate)
                return True
            return _ct_state(left, right, negate, entry, self)
        if isinstance(left, dict) and "&" in left and _reply_flags(left, op, right):
            return True  # replies only: as --syn, not a flow of its own
        raise Unknown(f"match on {_left_text(left)}")

    def _payload(self, payload: dict, op, right, m: Match, body: dict) -> bool:
        proto, field = payload.get("protocol"), payload.get("field")
        negate = op == "!="
        if proto in ("ip", "ip6") and field in ("saddr", "daddr"):
            if (proto == "ip") != (self.family == 4):
                return False  # the other family's header
            values = _values(right, body, "address", self.sets)
            if op not in ("==", "!=", "in"):
                raise Unknown(f"address compared with {op}")
            values = intersect(values, family_space((self.family,)))
            peer = field[0] == ("d" if self.direction == "egress" else "s")
            return self.address(m, peer, values, negate)
        if proto in ("tcp", "udp", "th") and field in ("sport", "dport"):
            protos = {"tcp": [(TCP, TCP)], "udp": [(UDP, UDP)], "th": [(TCP, UDP)]}
            m.restrict("proto", protos[proto])
            if self.forward and field == "dport":  # the container's port, after DNAT
                return self.landing()
            values = _compare(op, _values(right, body, "port", self.sets), 65535)
            m.restrict(field, values, negate)
            return True
        if proto in ("icmp", "icmpv6"):
            if (proto == "icmp") != (self.family == 4):
                return False
            m.restrict("proto", [(ICMP, ICMP)])
            if field == "type":  # on the destination port axis
                if op not in ("==", "!=", "in"):
                    raise Unknown(f"ICMP type compared with {op}")
                types = [(t, t) for t in self._icmp_types(right)]
                m.restrict("dport", types, negate)
                return True
            return self.unsure()  # a code, an id: narrower than the type
        if (proto, field) in (("ip", "protocol"), ("ip6", "nexthdr")):
            if (proto == "ip") != (self.family == 4):
                return False
            m.restrict("proto", _protocols(right, self.family), negate)
            return True
        raise Unknown(f"payload {proto} {field}")

    def _icmp_types(self, right) -> list[int]:
        values = _elements(right)
        if isinstance(right, str) and right.startswith("@"):
            raise Unknown(f"ICMP types from set {right[1:]}")
        return [icmp_type(v, self.family) for v in values]

    def _meta(self, key, right, negate, m: Match) -> bool:
        if key == "l4proto":
            m.restrict("proto", _protocols(right, self.family), negate)
            return True
        if key == "nfproto":
            return (FAMILY_NAMES[self.family] in _elements(right)) != negate
        if key in ("iifname", "oifname", "iif", "oif"):
            if self.forward and key[0] == "o":  # the container's bridge
                return self.landing()
            if key[0] != ("o" if self.direction == "egress" else "i"):
                raise Unknown(f"meta {key} on the {HOOKS[self.direction]} hook")
            names = [str(n) for n in _elements(right)]
            return self.interface_match(names, "*", negate)
        raise Unknown(f"meta {key}")


def _sets(items) -> dict[str, list | None]:
    out = {}
    for item in items:
        body = item.get("set")
        if not isinstance(body, dict):
            continue
        kind = body.get("type")
        readable = kind in ("ipv4_addr", "ipv6_addr", "inet_service")
        out[_key(body, body.get("name", ""))] = (
            list(body.get("elem", [])) if readable else None
        )
    return out


@dataclass
class Ruleset:
    """What the reader evaluates of `nft -j list ruleset`, keyed "family table name"."""

    path: str
    sets: dict[str, list | None]
    chains: dict[str, tuple[int, dict]]
    rules: list[tuple[int, dict]]


def _ruleset(text: str, path: str) -> Ruleset:
    items = _load(text, path)
    chains = {}
    for i, item in enumerate(items):
        body = item.get("chain")
        if isinstance(body, dict):
            chains[_key(body, body.get("name", ""))] = (i, body)
    rules = []
    problems = []
    for i, item in enumerate(items):
        body = item.get("rule")
        if isinstance(body, dict):
            if _key(body, body.get("chain", "")) not in chains:
                problems.append(
                    f"{path}: nftables[{i}].rule: chain {body.get('chain')} is not in the ruleset"
                )
            rules.append((i, body))
    problems += _bad_values(items, path)
    if problems:
        raise ReadError(problems)
    return Ruleset(path, _sets(items), chains, rules)


PRIORITY = (-(2**31), 2**31 - 1)  # a base chain's priority is a 32-bit integer
ADDRESS_FAMILIES = {"ipv4_addr": 4, "ipv6_addr": 6, "ip": 4, "ip6": 6}


def _bad_values(items, path: str) -> list[str]:
    """What nft itself would refuse to load: a priority beyond 32 bits, a policy
    that is neither accept nor drop, an address of the wrong family or with a
    prefix length out of range. Each with the chain, set or rule it is in."""
    out = []
    for i, item in enumerate(items):
        ((kind, body),) = item.items()
        if not isinstance(body, dict):
            continue
        what = f"{path}: nftables[{i}] {kind} {body.get('family')} {body.get('table')}"
        if kind == "chain" and "hook" in body:
            where = f"{what} {body.get('name')}"
            prio = body.get("prio", 0)
            if not isinstance(prio, int) or isinstance(prio, bool):
                out.append(f"{where}: priority {str(prio)[:40]} is not an integer")
            elif not PRIORITY[0] <= prio <= PRIORITY[1]:
                digits = len(str(abs(prio)))
                shown = str(prio) if digits <= 20 else f"of {digits} digits"
                out.append(
                    f"{where}: priority {shown} is beyond a 32-bit integer"
                    f" ({PRIORITY[0]}..{PRIORITY[1]})"
                )
            if body.get("policy", "accept") not in ("accept", "drop"):
                out.append(f"{where}: policy {str(body['policy'])[:40]!r}")
        elif kind == "set" and body.get("type") in ADDRESS_FAMILIES:
            family = ADDRESS_FAMILIES[body["type"]]
            for value in body.get("elem", []) or []:
                out += [f"{what} {body.get('name')}: {p}" for p in _bad(value, family)]
        elif kind == "rule":
            where = f"{what} chain {body.get('chain')} handle {body.get('handle', '?')}"
            for e in body.get("expr", []):
                match = e.get("match") if isinstance(e, dict) else None
                left = match.get("left") if isinstance(match, dict) else None
                payload = left.get("payload") if isinstance(left, dict) else None
                if not isinstance(payload, dict):
                    continue
                family = ADDRESS_FAMILIES.get(payload.get("protocol"))
                if family and payload.get("field") in ("saddr", "daddr"):
                    out += [f"{where}: {p}" for p in _bad(match.get("right"), family)]
    return out


def _bad(value, family: int) -> list[str]:
    """Why an address literal of a match or a set cannot be of `family`."""
    import ipaddress

    if isinstance(value, str) and value.startswith("@"):
        return []  # a named set: checked as a set
    if isinstance(value, dict) and "set" in value and isinstance(value["set"], list):
        return [p for v in value["set"] for p in _bad(v, family)]
    if isinstance(value, dict) and "elem" in value and isinstance(value["elem"], dict):
        return _bad(value["elem"].get("val"), family)
    if (
        isinstance(value, dict)
        and "range" in value
        and isinstance(value["range"], list)
    ):
        return [p for v in value["range"] for p in _bad(v, family)]
    text = value
    if isinstance(value, dict) and isinstance(value.get("prefix"), dict):
        text = f"{value['prefix'].get('addr')}/{value['prefix'].get('len')}"
    if not isinstance(text, str):
        return [f"{json.dumps(value)[:60]} is not an address"]
    address, _, length = text.partition("/")
    try:
        ip = ipaddress.ip_address(address)
        if ip.version != family:
            return [
                f"{text[:60]!r} is an IPv{ip.version} address in an IPv{family} match"
            ]
        ipaddress.ip_network(text, strict=False)
    except ValueError:
        if not length:
            return [f"{text[:60]!r} is not an address"]
        most = 32 if family == 4 else 128
        return [
            f"{text[:60]!r}: /{length[:20]} is not a prefix length of IPv{family} (0-{most})"
        ]
    return []


def _entries(ruleset: Ruleset, reader: RuleReader, family: int) -> list[ChainEntry]:
    path, chains = ruleset.path, ruleset.chains
    entries = [
        reader.entry(
            body,
            f"{path}: table {body['family']} {body['table']} chain {body['chain']} handle {body.get('handle', '?')}",
        )
        for i, body in ruleset.rules
        if body["family"] in TABLE_FAMILIES[family]
    ]
    for e in entries:
        if e.target and e.target not in chains:
            raise ReadError(
                [
                    f"{e.where}: jump to chain {e.target.split()[-1]}, which is not in the ruleset"
                ]
            )
    return entries


def _bases(chains, direction: str, family: int) -> list[tuple[int, str]]:
    """(priority, key) of the filter base chains a packet of the family meets."""
    return sorted(
        (
            (b.get("prio", 0), key)
            for key, (_, b) in chains.items()
            if b.get("hook") == HOOKS[direction]
            and b.get("type", "filter") == "filter"
            and b["family"] in TABLE_FAMILIES[family]
        ),
    )


def _decider(entries, bases, policies):
    def decide(tags):
        ordered = sorted(tags)
        label = "nochain"
        for _, key in bases:
            verdict, index = run_chain(entries, key, ordered)
            if verdict == "drop":
                return None
            if verdict == "accept":
                label = index
            elif policies[key] == "drop":
                return None
            elif label == "nochain":
                label = f"policy {key}"
        return label

    return decide


def _describer(entries, path: str):
    def describe(label):
        if label == "nochain":
            return "no base chain at this hook (the kernel accepts)", path
        if isinstance(label, str):
            key = label.split(" ", 1)[1]
            return f"policy accept of chain {key}", f"{path}: {key}"
        e = entries[label]
        return f"{e.where.split(': ', 1)[1]}: {e.text}", e.where

    return describe


def _hook(out: Assembly, ruleset: Ruleset, reader: RuleReader, role, into=None) -> bool:
    """One family's base chains at one hook into `out` (its rules into `into` when
    given, as ingress: the forward path); whether replies pass."""
    family, direction = reader.family, reader.direction
    entries = _entries(ruleset, reader, family)
    bases = _bases(ruleset.chains, direction, family)
    policies = {key: ruleset.chains[key][1].get("policy", "accept") for _, key in bases}
    if not bases:
        out.notes.append(
            f"no IPv{family} base chain on the {HOOKS[direction]} hook: the kernel accepts everything"
        )
    reachable = reachable_chains(entries, [key for _, key in bases], ruleset.path)
    decide = _decider(entries, bases, policies)
    boxes = evaluate([e.match for e in entries], decide, (family,))
    describe = _describer(entries, ruleset.path)
    if into is None:
        out.allowed(role, direction, boxes, describe, (family,))
        odd = odd_matches(entries, reachable)
        if odd is not None:
            new = [e.match for e in entries]
            boxes = odd_only(new, odd, decide, (family,))
            out.allowed(
                role, direction, boxes, odd_describe(describe), (family,), odd=True
            )
    else:
        into.allowed(role, "ingress", boxes, describe, (family,))
    chain_findings(out, role, entries, reachable)
    return replies_pass(entries, reachable, decide)


def _routes(ruleset: Ruleset) -> bool:
    """Does the host forward or DNAT anything (a forward base chain, a dnat rule)?"""
    hooked = any(b.get("hook") == "forward" for _, b in ruleset.chains.values())
    return hooked or any(
        isinstance(e, dict) and "dnat" in e
        for _, body in ruleset.rules
        for e in body.get("expr", ())
    )


def read(sources: dict, context) -> Live:
    path, text = sources["nft"]
    ruleset = _ruleset(text, path)
    role = context.role
    local_all = subnet_space(context.profile, role)
    out, forward = Assembly(), Assembly()
    chains = ruleset.chains
    others = sorted(
        {b["family"] for _, b in chains.values() if b.get("hook")}
        - {"ip", "ip6", "inet"}
    )
    if others:
        out.notes.append(
            f"base chains of families {', '.join(others)} are not evaluated"
        )
    routed = _routes(ruleset)
    out.notes.append(
        f"{path}: the forward hook audited for what reaches containers through DNAT,"
        " by the original port (what the containers send is not)"
        if routed
        else f"{path}: no forward base chain and no DNAT: the forward path is not audited"
    )
    stateful = []
    for family in (4, 6):
        local = intersect(local_all, family_space((family,)))
        for direction in ("ingress", "egress"):
            reader = RuleReader(
                direction, family, ruleset.sets, local, context.interface
            )
            stateful.append(_hook(out, ruleset, reader, role))
        if routed:
            reader = RuleReader(
                "forward", family, ruleset.sets, local, context.interface
            )
            _hook(out, ruleset, reader, role, into=forward)
    live = out.live(
        context.profile, context.profile.cloud, (role,), (4, 6), all(stateful)
    )
    if routed:
        live.forward = forward.live(
            context.profile, context.profile.cloud, (role,), (4, 6)
        ).matrix
        live.forward_families = (4, 6)
    return live
