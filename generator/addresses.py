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
