"""Address text, checked the way `ipaddress` checks it, in a fraction of its time.

Profiles can list 10,000 addresses, and `ipaddress.ip_network` takes a few
microseconds for each: more than everything else a plan does. Plain IPv4 blocks
written the way ipaddress writes them ("10.0.0.0/8", "192.0.2.7") are recognised
by one regular expression; anything else (IPv6, netmasks, leading zeros, errors)
goes to ipaddress itself, so every answer and every error is ipaddress's.
tests/test_addresses.py compares the two on generated input.
"""

from __future__ import annotations

import ipaddress
import re
from itertools import repeat
from operator import and_, itemgetter, sub

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = re.compile(
    rf"{_OCTET}\.{_OCTET}\.{_OCTET}\.{_OCTET}(?:/(3[0-2]|[12]?[0-9]))?\Z"
)


def network_text(text: str) -> str:
    """`str(ipaddress.ip_network(text))`: the block as ipaddress writes it.

    Raises ValueError as ip_network does (host bits set included).
    """
    match = _IPV4.match(text)
    if match:
        a, b, c, d, plen = match.groups()
        if plen is None:
            return f"{text}/32"
        if plen == "32":  # no host bits to check
            return text
        value = (int(a) << 24) | (int(b) << 16) | (int(c) << 8) | int(d)
        if not value & ((1 << (32 - int(plen))) - 1):
            return text
    return str(ipaddress.ip_network(text))


# From this many entries a list is read as plain IPv4 blocks first (the long lists of
# public addresses): a few passes in C instead of a loop per block.
LONG = 64
_SIZES = {str(n): 1 << (32 - n) for n in range(33)}  # /n as ipaddress writes it
# The profile reader checks a long list this way and the optimizer parses the same
# list again: each list once per process. Bounded, for a long-lived process.
_PLAIN: dict[tuple[str, ...], tuple | None] = {}
_PLAIN_MAX = 64


def plain_v4(cidrs: tuple[str, ...]) -> tuple[list[int], list[int]] | None:
    """(first addresses, sizes) of the blocks, in list order, when every CIDR is an
    IPv4 block written as ipaddress writes it (a dotted quad without leading zeros,
    the prefix length, no host bits); None otherwise. The lists are shared: read
    them, never change them."""
    found = _PLAIN.get(cidrs, False)
    if found is False:
        found = _parse_plain_v4(cidrs)
        if len(_PLAIN) >= _PLAIN_MAX:
            _PLAIN.clear()
        _PLAIN[cidrs] = found
    return found


def _parse_plain_v4(cidrs: tuple[str, ...]) -> tuple[list[int], list[int]] | None:
    # socket's C core: socket.py itself would cost a few ms at every start.
    from _socket import AF_INET, inet_ntop, inet_pton

    try:
        parts = list(map(str.partition, cidrs, repeat("/")))
    except TypeError:  # not all strings
        return None
    sizes = list(map(_SIZES.get, map(itemgetter(2), parts)))
    if None in sizes:
        return None
    addresses = list(map(itemgetter(0), parts))
    try:
        packed = list(map(inet_pton, repeat(AF_INET), addresses))
    except (OSError, ValueError):  # not IPv4; ValueError: a NUL character
        return None
    if list(map(inet_ntop, repeat(AF_INET), packed)) != addresses:
        return None  # written otherwise than inet_ntop (and ipaddress) write it
    firsts = list(map(int.from_bytes, packed, repeat("big")))
    if any(map(and_, firsts, map(sub, sizes, repeat(1)))):
        return None  # host bits set
    return firsts, sizes


def networks_text(texts) -> tuple[str, ...] | None:
    """network_text of each of a long list of plain IPv4 addresses and blocks, in a
    few passes in C; None for a short list or when one is anything else (then each
    is read on its own, with its own message)."""
    if len(texts) < LONG:
        return None
    try:
        written = tuple([text if "/" in text else f"{text}/32" for text in texts])
    except TypeError:  # not all strings
        return None
    return written if plain_v4(written) is not None else None


def version(text: str) -> int:
    """4 or 6 for an address or block (host bits allowed); ValueError if neither."""
    if _IPV4.match(text):
        return 4
    return ipaddress.ip_network(text, strict=False).version


def families(texts) -> tuple[int, int]:
    """How many of the addresses or blocks are IPv4 and how many IPv6, as version()
    tells each; ValueError (as version raises it) for one that is neither."""
    match = _IPV4.match
    other = [text for text in texts if not match(text)]  # one C-level pass
    v6 = sum(version(text) == 6 for text in other)
    return len(texts) - v6, v6
