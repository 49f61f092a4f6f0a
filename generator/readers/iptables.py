"""iptables-save (and ip6tables-save, ipset save) read with iptables' own evaluation.

A packet of a new connection enters INPUT (ingress) or OUTPUT (egress) of the filter
table and walks it in order: jumps and gotos into user chains, RETURN back to the
caller, the first ACCEPT or DROP/REJECT decides, and a built-in chain's policy decides
what falls off its end (only the filter table decides). FORWARD is walked for a new
connection that reaches a container through DNAT (a published port, a NodePort), by
its original destination port (--ctorigdstport); what the containers send is not.
Nothing here knows rulegen's own layout: kube-proxy's,
Docker's or a hand-written chain are evaluated the same way. The host's own address
is unknown, so a match on it (-d on INPUT, -s on OUTPUT) is decided from the role's
subnets when they settle it, and reported otherwise.
"""

from __future__ import annotations

import re
from dataclasses import field

from ..diff import ADDRESS_BASE
from . import Finding, Live, ReadError
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
    never,
    odd_describe,
    odd_matches,
    odd_only,
    range_intervals,
    reachable_chains,
    replies_pass,
    run_chain,
    settle,
    subnet_space,
    subtract,
)

HOOKS = {"ingress": "INPUT", "egress": "OUTPUT", "forward": "FORWARD"}
BUILTIN = ("INPUT", "FORWARD", "OUTPUT")
# Targets that do something to the packet but let it go on down the chain.
CONTINUE = frozenset(
    "LOG NFLOG ULOG TRACE MARK CONNMARK AUDIT CLASSIFY DSCP TOS TCPMSS SET"
    " CONNSECMARK SECMARK CHECKSUM".split()
)
BLOCK = frozenset({"DROP", "REJECT"})
PROTOCOL_NUMBERS = {"6": "tcp", "17": "udp", "1": "icmp", "58": "ipv6-icmp", "0": "all"}


@dataclass
class Table:
    policies: dict[str, tuple[str | None, int]] = field(default_factory=dict)
    rules: list[tuple[str, int, str, list]] = field(default_factory=list)


def parse_save(text: str, path: str, family: int | None = None) -> dict[str, Table]:
    """The tables of an iptables-save file; ReadError lists every malformed line
    (with `family`, also every address that is not one of that family's)."""
    problems: list[str] = []
    tables: dict[str, Table] = {}
    current: str | None = None
    opened = 0
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{path}:{number}"
        if line.startswith("*"):
            if current:
                problems.append(
                    f"{where}: table {line[1:]} starts before COMMIT of {current}"
                )
            current, opened = line[1:], number
            tables[current] = Table()
        elif current is None:
            problems.append(
                f"{where}: {line[:60]!r} outside a table: not iptables-save output"
            )
        elif line == "COMMIT":
            current = None
        elif line.startswith(":"):
            parts = line[1:].split()
            if len(parts) < 2:
                problems.append(f"{where}: chain declaration {line!r} is incomplete")
                continue
            policy = None if parts[1] == "-" else parts[1]
            if policy not in (None, "ACCEPT", "DROP"):
                problems.append(
                    f"{where}: chain {parts[0]}: unknown policy {parts[1]!r}"
                )
            tables[current].policies[parts[0]] = (policy, number)
        else:
            if line.startswith("["):  # iptables-save -c: [packets:bytes] -A ...
                line = line.split("]", 1)[-1].strip()
            if not line.startswith("-A "):
                problems.append(
                    f"{where}: {line[:60]!r} is not a rule (-A CHAIN ...) of iptables-save"
                )
                continue
            try:
                tokens = _tokens(line)
            except ValueError as exc:
                problems.append(f"{where}: {exc}")
                continue
            if family is not None:
                problems += [f"{where}: {p}" for p in _bad_addresses(tokens, family)]
            tables[current].rules.append((tokens[1], number, line, tokens))
    if current:
        problems.append(
            f"{path}:{opened}: table {current} has no COMMIT: the export is truncated"
        )
    if problems:
        raise ReadError(problems)
    return tables


def _tokens(line: str) -> list[str]:
    """The words of a rule, split as a POSIX shell (shlex) splits them, in time
    linear in the line: shlex builds each word a character at a time, which takes
    minutes on a comment of a few megabytes."""
    if '"' not in line and "'" not in line and "\\" not in line:
        return line.split()
    words, at = [], 0
    for word in _WORD.finditer(line):
        if line[at : word.start()].strip():
            break  # an unclosed quote: the word pattern cannot start there
        words.append("".join(_unquote(piece) for piece in _PIECE.finditer(word[0])))
        at = word.end()
    rest = line[at:].strip()
    if rest:
        lone = rest.startswith("\\")  # shlex's words for a backslash at the end
        raise ValueError("No escaped character" if lone else "No closing quotation")
    return words


# A word: runs of plain characters, "double-quoted" text (with backslash escapes),
# 'single-quoted' text and backslash-escaped characters, with no space between.
# Each quoted form is an unrolled loop: no backtracking on a long or unclosed quote.
_PIECES = r"""[^\s"'\\]+|"[^"\\]*(?:\\.[^"\\]*)*"|'[^']*'|\\."""
_WORD = re.compile(f"(?:{_PIECES})+", re.S)
_PIECE = re.compile(_PIECES, re.S)
_DOUBLE_ESCAPES = re.compile(r'\\([\\"$`\n])')


def _unquote(piece) -> str:
    text = piece[0]
    if text[0] == '"':  # in double quotes, a backslash escapes only \\ " $ ` newline
        return _DOUBLE_ESCAPES.sub(r"\1", text[1:-1])
    if text[0] == "'":
        return text[1:-1]
    if text[0] == "\\":
        return text[1:]
    return text


ADDRESS_OPTIONS = ("-s", "--source", "-d", "--destination")
RANGE_OPTIONS = ("--src-range", "--dst-range")
FAMILY_TOOL = {4: "iptables", 6: "ip6tables"}


def _bad_addresses(tokens: list[str], family: int) -> list[str]:
    """Why the addresses of a rule's matches cannot be loaded by the family's tool:
    a prefix length out of range, the other family's address, not an address."""
    import ipaddress

    out = []
    for i, flag in enumerate(tokens[:-1]):
        if flag in JUMPS:
            break  # the target's own options (--to-destination ...) follow
        if flag not in ADDRESS_OPTIONS + RANGE_OPTIONS:
            continue
        value = tokens[i + 1]
        parts = value.split(",") if flag in ADDRESS_OPTIONS else value.split("-", 1)
        for part in parts:
            address, _, length = part.partition("/")
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                out.append(f"{flag} {value!r}: {address!r} is not an address")
                continue
            if ip.version != family:
                tool = FAMILY_TOOL[family]
                out.append(
                    f"{flag} {value!r}: an IPv{ip.version} address in an {tool}-save"
                    f" file, which {tool}-save never writes ({tool}-restore would read"
                    " no address but its prefix length: ::/0 as every address)"
                )
            elif length and flag in RANGE_OPTIONS:
                out.append(f"{flag} {value!r}: a range takes addresses, not prefixes")
            elif length:
                try:
                    ipaddress.ip_network(part, strict=False)
                except ValueError:
                    most = 32 if family == 4 else 128
                    out.append(
                        f"{flag} {value!r}: /{length[:20]} is not a prefix length or"
                        f" netmask of IPv{family} (0-{most})"
                    )
    return out


def _target_of(tokens: list[str]) -> str | None:
    for flag in ("-j", "--jump"):
        if flag in tokens[:-1]:
            return tokens[tokens.index(flag) + 1]
    return None


def parse_ipsets(text: str, path: str) -> dict[str, list | None]:
    """Set name -> address intervals (None: a set type this reader cannot evaluate)."""
    problems: list[str] = []
    sets: dict[str, list | None] = {}
    excluded: dict[str, list] = {}
    families: dict[str, int] = {}  # ipset's default family is inet
    for number, raw in enumerate(text.splitlines(), 1):
        parts = raw.split()
        if not parts or parts[0].startswith("#"):
            continue
        where = f"{path}:{number}"
        if parts[0] == "create" and len(parts) >= 3:
            kind = parts[2]
            sets[parts[1]] = [] if kind in ("hash:net", "hash:ip") else None
            excluded[parts[1]] = []
            after = parts[parts.index("family") + 1 :] if "family" in parts else []
            families[parts[1]] = 6 if after[:1] == ["inet6"] else 4
        elif parts[0] == "add" and len(parts) >= 3:
            if parts[1] not in sets:
                problems.append(
                    f"{where}: set {parts[1]} is filled before it is created"
                )
                continue
            if sets[parts[1]] is None:
                continue
            try:
                entry = (
                    range_intervals(*parts[2].split("-", 1))
                    if "-" in parts[2]
                    else address_intervals(parts[2])
                )
            except ValueError:
                problems.append(
                    f"{where}: {parts[2]!r} is not an address of set {parts[1]}"
                )
                continue
            if (entry[0][0] >= ADDRESS_BASE[6]) != (families[parts[1]] == 6):
                problems.append(
                    f"{where}: {parts[2]!r} is not of the family of set {parts[1]}"
                    f" (IPv{families[parts[1]]})"
                )
                continue
            (excluded if "nomatch" in parts[3:] else sets)[parts[1]].extend(entry)
        elif parts[0] in ("swap", "destroy", "flush", "rename"):
            problems.append(f"{where}: {parts[0]!r}: not `ipset save` output")
        else:
            problems.append(
                f"{where}: {raw.strip()[:60]!r} is not a line of `ipset save`"
            )
    if problems:
        raise ReadError(problems)
    return {
        name: None if ivs is None else subtract(ivs, excluded[name])
        for name, ivs in sets.items()
    }


def _ports(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        lo, _, hi = part.partition(":")
        try:
            a = int(lo) if lo else 0
            b = int(hi) if hi else (65535 if _ else a)
        except ValueError:
            raise Unknown(f"port {part!r} is not a number (service names are not read)")
        if not 0 <= a <= b <= 65535:
            raise Unknown(f"port range {part!r} is out of order")
        out.append((a, b))
    return out


def _protocol(name: str, family: int) -> list[tuple[int, int]]:
    name = PROTOCOL_NUMBERS.get(name, name.lower())
    if name == "all":
        return [(TCP, ICMP)]
    if name in ("tcp", "udp"):
        return [(TCP, TCP)] if name == "tcp" else [(UDP, UDP)]
    if name == ("icmp" if family == 4 else "ipv6-icmp") or (
        family == 6 and name == "icmpv6"
    ):
        return [(ICMP, ICMP)]
    raise Unknown(f"protocol {name}: the matrix speaks of tcp, udp and all only")


def _addr(text: str):
    try:
        return address_intervals(text)
    except ValueError:
        raise Unknown(f"{text!r} is not an address")


def _set_values(sets, name: str, flags: str):
    """The addresses of an ipset that --match-set names, on one side of the packet."""
    values = sets.get(name) if sets is not None else None
    if sets is None:
        raise Unknown(f"set {name}: pass the `ipset save` output (--ipset)")
    if name not in sets:
        raise Unknown(f"set {name} is not in the ipset save output")
    if values is None:
        raise Unknown(f"set {name}: only hash:net and hash:ip sets are read")
    if "," in flags:
        raise Unknown(f"set {name}: multi-dimension match {flags}")
    return values


def _verdict(entry: ChainEntry, target: str, goto: bool, chains) -> None:
    if target == "ACCEPT":
        entry.action = "accept"
    elif target in BLOCK:
        entry.action = "drop"
    elif target == "RETURN":
        entry.action = "return"
    elif target in CONTINUE:
        entry.action = "continue"
    elif target in chains:
        entry.action, entry.target = ("goto" if goto else "jump"), target
    else:  # NFQUEUE, a target of an extension, ...: the verdict is not ours to know
        raise Unknown(f"target {target} is not evaluated")


DPORTS = ("--dport", "--destination-port", "--dports", "--destination-ports")
SPORTS = ("--sport", "--source-port", "--sports", "--source-ports")
# Options that change nothing the flow space or the verdict depends on.
IGNORED = ("--syn", "--return-nomatch", "--update-counters", "--update-subcounters")
JUMPS = ("-j", "--jump", "-g", "--goto")


class RuleParser(HostSide):
    """One -A line into an entry with the match it makes in the flow space."""

    def __init__(self, direction, family, sets, local, interface, chains=(), path=""):
        super().__init__(direction, family, local, interface)
        self.sets = sets
        self.chains = set(chains)
        self.path = path

    def parse(self, chain: str, number: int, text: str, tokens: list[str]):
        entry = ChainEntry(
            chain, f"{self.path}:{number}", text, full_match((self.family,))
        )
        entry = settle(entry, self.family, lambda: self._matches(tokens[2:], entry))
        return self.finish(entry)

    def _matches(self, tokens: list[str], entry: ChainEntry) -> bool:
        holds = True
        module = None
        i = 0

        def arg() -> str:
            nonlocal i
            if i >= len(tokens):
                raise Unknown(f"{tokens[i - 1]} without a value")
            i += 1
            return tokens[i - 1]

        while i < len(tokens):
            negate = tokens[i] == "!"
            if negate:
                i += 1
            if i >= len(tokens):
                raise Unknown("'!' at the end of the rule")
            opt = tokens[i]
            i += 1
            if opt in ("-m", "--match"):
                module = arg()
                if module not in KNOWN_MODULES:
                    raise Unknown(f"match module {module!r} is not evaluated")
            elif opt in JUMPS:
                _verdict(entry, arg(), opt in ("-g", "--goto"), self.chains)
                break  # what follows are the target's own options
            else:
                holds &= self._option(opt, arg, negate, entry.match, entry, module)
        return holds

    def _option(self, opt, arg, negate, m: Match, entry: ChainEntry, module) -> bool:
        """Whether the packet's own side holds; the peer side restricts m."""
        if opt in ("-s", "--source", "-d", "--destination"):
            values = [iv for a in arg().split(",") for iv in _addr(a)]
            side = "src" if opt in ("-s", "--source") else "dst"
            return self._address(m, side, values, negate)
        if opt in ("-i", "--in-interface", "-o", "--out-interface"):
            return self._iface(IFACE_FLAGS[opt], arg(), negate)
        if opt == "--match-set":
            name, flags = arg(), arg()
            values = _set_values(self.sets, name, flags)
            return self._address(m, flags, values, negate)
        if opt in ("--src-range", "--dst-range"):
            values = range_intervals(*arg().split("-", 1))
            return self._address(m, opt[2:5], values, negate)
        if opt in ("--src-type", "--dst-type"):
            return self._addrtype(opt[2:5], arg(), negate)
        if opt in ("-p", "--protocol"):
            m.restrict("proto", _protocol(arg(), self.family), negate)
        elif opt in DPORTS and self.forward:  # the container's port, after DNAT
            _ports(arg())
            return self.landing()
        elif opt in DPORTS:
            m.restrict("dport", _ports(arg()), negate)
        elif opt == "--ctorigdstport" and self.forward:
            m.restrict("dport", _ports(arg()), negate)
        elif opt in SPORTS:
            m.restrict("sport", _ports(arg()), negate)
        elif opt in ("--ctstate", "--state"):
            return self.states(entry, set(arg().upper().split(",")), negate)
        elif opt == "--tcp-flags":
            mask, flags = arg(), arg()
            if (set(mask.split(",")), flags) != ({"FIN", "SYN", "RST", "ACK"}, "SYN"):
                raise Unknown(f"--tcp-flags {mask} {flags} is not evaluated")
            # --syn, as iptables-save writes it
        elif opt in ("--icmp-type", "--icmpv6-type"):
            return self._icmp(arg(), m, negate)
        elif opt == "--comment":
            arg()
        elif opt not in IGNORED:  # --syn: a new connection's first packet is one
            raise Unknown(f"option {opt} (module {module or 'none'}) is not evaluated")
        return True

    def _icmp(self, value: str, m: Match, negate: bool) -> bool:
        """--icmp-type TYPE[/CODE] (a number or a name, or any): the type, on the
        destination port axis; a code is narrower than its type, so a match on one
        holds for a rule that lets the packet on and never for a drop."""
        kind, slash, _ = value.partition("/")
        if kind.lower() == "any":
            return True
        m.restrict("dport", [(icmp_type(kind, self.family),) * 2], negate)
        return self.unsure() if slash else True

    def _address(self, m: Match, side: str, values, negate) -> bool:
        peer_side = "dst" if self.direction == "egress" else "src"
        return self.address(m, side == peer_side, values, negate)

    def _iface(self, flag: str, name: str, negate: bool) -> bool:
        if self.forward and flag == "-o":  # the container's bridge
            return self.landing()
        if flag != ("-i" if self.direction in ("ingress", "forward") else "-o"):
            raise Unknown(f"{flag} is not valid in {HOOKS[self.direction]}")
        return self.interface_match([name], "+", negate)

    def _addrtype(self, side: str, kinds: str, negate: bool) -> bool:
        local_side = {"ingress": "dst", "egress": "src"}.get(self.direction)
        types = set(kinds.upper().split(","))
        if side == local_side:
            hit = bool(types & {"LOCAL", "UNICAST"})
        else:
            hit = "UNICAST" in types  # the peer is never this host
        return hit != negate


IFACE_FLAGS = {"-i": "-i", "--in-interface": "-i", "-o": "-o", "--out-interface": "-o"}
KNOWN_MODULES = frozenset(
    "tcp udp multiport conntrack state comment set iprange addrtype icmp icmp6 icmpv6".split()
)


def _check_chains(table: Table, path: str) -> None:
    problems = []
    for chain, number, _, _ in table.rules:
        if chain not in table.policies:
            problems.append(
                f"{path}:{number}: rule in chain {chain}, which is never declared"
            )
    if problems:
        raise ReadError(problems)


class Program:
    """One family's filter table, ready to evaluate for one direction."""

    def __init__(self, table: Table, path: str, family: int, direction: str, parser):
        self.path, self.family, self.direction = path, family, direction
        self.hook = HOOKS[direction]
        self.policies = table.policies
        self.entries = [parser.parse(*rule) for rule in table.rules]
        self.reachable = reachable_chains(self.entries, [self.hook], path)

    def decide(self, tags: frozenset):
        ordered = sorted(tags)
        verdict, label = run_chain(self.entries, self.hook, ordered)
        if verdict in ("accept", "drop"):
            return label if verdict == "accept" else None
        policy, _ = self.policies.get(self.hook, ("ACCEPT", 0))
        if policy not in (None, "ACCEPT"):
            return None
        # A RETURN back to the built-in chain, whose policy accepts: that RETURN
        # is what allows (rulegen's own layout allows this way).
        return "policy" if label is None else f"return {label}"

    def describe(self, label):
        """(purpose, reference) of what allows: an entry, a RETURN, the policy."""
        policy, line = self.policies.get(self.hook, ("ACCEPT", 0))
        if label == "policy":
            return (
                f":{self.hook} {policy or 'ACCEPT'} (chain policy)",
                f"{self.path}:{line}",
            )
        if isinstance(label, str):  # "return N"
            entry = self.entries[int(label.split()[1])]
            return (
                f"{entry.text}, then :{self.hook} {policy or 'ACCEPT'} (chain policy)",
                entry.where,
            )
        entry = self.entries[label]
        return entry.text, entry.where


def programs(
    tables: dict, path: str, family: int, direction: str, sets, local, interface
) -> Program | None:
    table = tables.get("filter")
    if table is None:
        return None
    _check_chains(table, path)
    parser = RuleParser(direction, family, sets, local, interface, table.policies, path)
    return Program(table, path, family, direction, parser)


def _note(out: Assembly, note: str) -> None:
    if note not in out.notes:
        out.notes.append(note)


def _hook(out: Assembly, tables, path, family, direction, role, sets, local, interface):
    """One family's filter table at one hook into `out`; whether replies pass."""
    program = programs(tables, path, family, direction, sets, local, interface)
    if program is None:
        _note(out, f"{path}: no filter table: {HOOKS[direction]} accepts everything")
        boxes = [(box, "none") for box in full_match((family,)).boxes()]

        def describe(label):
            return f"no filter table in {path}", path

        out.allowed(role, direction, boxes, describe, (family,))
        return False
    matches = [
        e.match if e.chain in program.reachable else never() for e in program.entries
    ]
    boxes = evaluate(matches, program.decide, (family,))
    out.allowed(role, direction, boxes, program.describe, (family,))
    odd = odd_matches(program.entries, program.reachable)
    if odd is not None:
        boxes = odd_only(matches, odd, program.decide, (family,))
        describe = odd_describe(program.describe)
        out.allowed(role, direction, boxes, describe, (family,), odd=True)
    chain_findings(out, role, program.entries, program.reachable)
    return replies_pass(program.entries, program.reachable, program.decide)


def _forward(
    out: Assembly, into: Assembly, tables, path, family, role, sets, local, interface
):
    """FORWARD, for what reaches a container through DNAT, into `into` (as ingress
    rules by the original port), when the host forwards or DNATs anything."""
    filter_table, nat = tables.get("filter"), tables.get("nat")
    dnat = nat is not None and any(
        _target_of(tokens) == "DNAT" for *_, tokens in nat.rules
    )
    routed = filter_table is not None and any(
        chain == "FORWARD" for chain, *_ in filter_table.rules
    )
    if not (dnat or routed):
        _note(
            out, f"{path}: no FORWARD rule and no DNAT: the forward path is not audited"
        )
        return False
    program = programs(tables, path, family, "forward", sets, local, interface)
    matches = [
        e.match if e.chain in program.reachable else never() for e in program.entries
    ]
    boxes = evaluate(matches, program.decide, (family,))
    into.allowed(role, "ingress", boxes, program.describe, (family,))
    chain_findings(out, role, program.entries, program.reachable)
    _note(
        out,
        f"{path}: FORWARD audited for what reaches containers through DNAT, by the"
        " original port (what the containers send is not)",
    )
    return True


def _other_tables(out: Assembly, tables, path: str, role) -> None:
    """Only the filter table is evaluated; a drop elsewhere (raw, mangle) is said."""
    for name, table in sorted(tables.items()):
        if name in ("filter", "nat"):
            continue
        for _, number, line, tokens in table.rules:
            if _target_of(tokens) in BLOCK:
                out.unknown.append(
                    Finding(
                        role,
                        f"{path}:{number}",
                        line,
                        f"a drop in the {name} table is not evaluated",
                    )
                )


def read(sources: dict, context) -> Live:
    """A host's iptables-save (and ip6tables-save) as the live rules of context.role."""

    role = context.role
    sets = parse_ipsets(*reversed(sources["ipset"])) if "ipset" in sources else None
    local_all = subnet_space(context.profile, role)
    out, forward = Assembly(), Assembly()
    families, stateful, routed = [], [], []
    for family, key in ((4, "iptables"), (6, "ip6tables")):
        if key not in sources:
            continue
        path, text = sources[key]
        families.append(family)
        local = intersect(local_all, family_space((family,)))
        tables = parse_save(text, path, family)
        _other_tables(out, tables, path, role)
        if _forward(
            out, forward, tables, path, family, role, sets, local, context.interface
        ):
            routed.append(family)
        for direction in ("ingress", "egress"):
            stateful.append(
                _hook(
                    out,
                    tables,
                    path,
                    family,
                    direction,
                    role,
                    sets,
                    local,
                    context.interface,
                )
            )
    if any(stateful) and not all(stateful):
        out.notes.append(
            "replies are allowed by conntrack in one family or direction only"
        )
    live = out.live(
        context.profile, context.profile.cloud, (role,), families, all(stateful)
    )
    if routed:
        live.forward = forward.live(
            context.profile, context.profile.cloud, (role,), routed
        ).matrix
        live.forward_families = tuple(routed)
    return live
