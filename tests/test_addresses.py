"""The fast address checks give ipaddress's answers and errors, on any input."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from generator import addresses
from generator.addresses import LONG, network_text, networks_text, version

OCTETS = st.one_of(
    st.integers(0, 255).map(str),
    st.sampled_from(["00", "01", "007", "256", "999", "", "1a", "٣", " 1", "+1"]),
)
PREFIXES = st.one_of(
    st.none(),
    st.integers(0, 33).map(str),
    st.sampled_from(["", "08", "032", "255.255.0.0", "0.0.0.255", "x", "-1"]),
)
IPV4_LIKE = st.builds(
    lambda parts, plen: ".".join(parts) + ("" if plen is None else f"/{plen}"),
    st.lists(OCTETS, min_size=3, max_size=5),
    PREFIXES,
)
ANY = st.one_of(
    IPV4_LIKE,
    st.ip_addresses().map(str),
    st.builds(lambda a, p: f"{a}/{p}", st.ip_addresses(v=6), st.integers(0, 129)),
    st.text(max_size=20),
)


def expected(call):
    try:
        return call()
    except ValueError as exc:
        return ("ValueError", str(exc))


@given(ANY)
@example("10.0.0.0/8")
@example("10.0.0.1/8")
@example("0.0.0.0/0")
@example("255.255.255.255")
@example("1.2.3.4/32\n")
def test_network_text_is_ipaddress(text):
    assert expected(lambda: network_text(text)) == expected(
        lambda: str(ipaddress.ip_network(text))
    )


@given(ANY)
@example("10.0.0.1/8")
@example("2001:db8::1/64")
def test_version_is_ipaddress(text):
    assert expected(lambda: version(text)) == expected(
        lambda: ipaddress.ip_network(text, strict=False).version
    )


@pytest.mark.parametrize(
    "text, canonical",
    [("192.0.2.7", "192.0.2.7/32"), ("10.0.0.0/08", "10.0.0.0/8")],
)
def test_canonical_text(text, canonical):
    assert network_text(text) == canonical


GOOD_V4 = st.builds(
    lambda a, n, bare: (
        str(ipaddress.ip_address(a))
        if bare
        else str(ipaddress.ip_network(f"{ipaddress.ip_address(a)}/{n}", strict=False))
    ),
    st.integers(0, 2**32 - 1),
    st.integers(0, 32),
    st.booleans(),
)


@settings(max_examples=150, deadline=None)
@given(
    st.lists(GOOD_V4, min_size=LONG, max_size=LONG + 8),
    st.none() | st.tuples(st.integers(0, LONG - 1), ANY | st.integers() | st.none()),
)
def test_a_long_list_reads_as_each_of_its_items_would(texts, odd):
    # A long list of good IPv4 blocks, perhaps with one odd item: the fast read
    # gives what each item's own reading gives, or None (each read on its own).
    if odd is not None:
        texts[odd[0]] = odd[1]
    addresses._PLAIN.clear()
    one_by_one = []
    for text in texts:
        try:
            one_by_one.append(network_text(text))
        except (ValueError, TypeError, AttributeError):
            one_by_one = None
            break
    fast = networks_text(texts)
    if fast is not None:
        assert list(fast) == one_by_one
    elif odd is None:
        raise AssertionError("a list of plain IPv4 blocks took the slow way")
