"""The agent that `rulegen verify` runs in each of its network namespaces.

Standard library only, so that starting one per namespace stays cheap:

    python -m generator.netprobe serve --tcp 22,80 --udp 53

binds every port (IPv4 and IPv6), prints "ready", and answers: a TCP connection is accepted and
closed, a UDP datagram gets a reply (a DNS answer header when it looks like a
query). Meanwhile each line on stdin is a job,
{"timeout": 0.3, "probes": [{"id", "protocol", "address", "port"}, ...],
"client_ports": [low, high] or null, "reserved": "22,53"}, and gets one line back:
{"id": "connected" | "blocked" | "refused" | "error: ..."}; protocol "icmp" sends an
echo request (its port is only an identifier); a TCP probe with "sport" connects
from that source port (a stateless rule's reply port, which the agent may also
serve: its listeners share ports). The probes of a job run in parallel. End of stdin
ends the agent.
"""

from __future__ import annotations

import argparse
import json
import selectors
import socket
import struct
import sys
import threading
from concurrent.futures import ThreadPoolExecutor

MAX_WORKERS = 64


def ports(text: str) -> list[int]:
    return [int(p) for p in text.split(",") if p]


def _dual_stack(kind: int) -> socket.socket:
    """One socket for IPv4 and IPv6 (IPv4 arrives as ::ffff:a.b.c.d)."""
    sock = socket.socket(socket.AF_INET6, kind)
    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
    return sock


def bind(tcp: list[int], udp: list[int]) -> selectors.DefaultSelector:
    sel = selectors.DefaultSelector()
    for port in tcp:
        sock = _dual_stack(socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(("::", port))
        sock.listen(256)
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, "tcp")
    for port in udp:
        sock = _dual_stack(socket.SOCK_DGRAM)
        sock.bind(("::", port))
        sock.setblocking(False)
        sel.register(sock, selectors.EVENT_READ, "udp")
    return sel


def answer_forever(sel: selectors.DefaultSelector, stop: threading.Event) -> None:
    while not stop.is_set():
        for key, _ in sel.select(timeout=0.2):
            sock = key.fileobj
            try:
                if key.data == "tcp":
                    conn, _ = sock.accept()
                    conn.close()
                else:
                    data, peer = sock.recvfrom(2048)
                    sock.sendto(answer(data), peer)
            except OSError:
                continue


def serve(tcp: list[int], udp: list[int]) -> None:
    sel = bind(tcp, udp)  # before "ready": a port that cannot be bound fails the start
    stop = threading.Event()
    threading.Thread(target=answer_forever, args=(sel, stop), daemon=True).start()
    print("ready", flush=True)
    for line in sys.stdin:
        job = json.loads(line)
        if job.get("client_ports"):
            low, high = job["client_ports"]
            set_client_ports(low, high, job.get("reserved", ""))
        print(json.dumps(probe(job["probes"], job["timeout"])), flush=True)
    stop.set()


def answer(query: bytes) -> bytes:
    """A minimal DNS response: same ID and question, QR set, no records."""
    if len(query) < 12:
        return b"pong"
    ident, flags, qd = struct.unpack("!HHH", query[:6])
    return struct.pack("!HHHHHH", ident, 0x8180 | (flags & 0x0100), qd, 0, 0, 0) + (
        query[12:]
    )


def query(ident: int) -> bytes:
    name = b"".join(bytes([len(p)]) + p for p in (b"rulegen", b"test")) + b"\0"
    return struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + name + b"\0\1\0\1"


def ping(address: str, ident: int, timeout: float) -> str:
    """One ICMP echo request (raw socket: the agent runs as root in its namespace)."""
    import os
    import time

    six = ":" in address
    family, proto = (
        (socket.AF_INET6, socket.IPPROTO_ICMPV6) if six else (socket.AF_INET, 1)
    )
    request, reply = (128, 129) if six else (8, 0)
    ident = (ident ^ os.getpid()) & 0xFFFF
    body = struct.pack("!BBHHH", request, 0, 0, ident, 1) + b"rulegen"
    if not six:  # the kernel computes ICMPv6 checksums, not ICMP ones
        body = body[:2] + struct.pack("!H", _checksum(body)) + body[4:]
    with socket.socket(family, socket.SOCK_RAW, proto) as sock:
        sock.sendto(body, (address, 0))
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            data, peer = sock.recvfrom(2048)
            icmp = data if six else data[(data[0] & 0x0F) * 4 :]
            if (
                peer[0] == address
                and len(icmp) >= 8
                and icmp[0] == reply
                and struct.unpack("!H", icmp[4:6])[0] == ident
            ):
                return "connected"
    return "blocked"


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    total = (total >> 16) + (total & 0xFFFF)
    return ~(total + (total >> 16)) & 0xFFFF


def probe_one(item: dict, timeout: float) -> str:
    family = socket.AF_INET6 if ":" in item["address"] else socket.AF_INET
    target = (item["address"], item["port"])
    try:
        if item["protocol"] == "icmp":
            return ping(item["address"], item["port"], timeout)
        if item["protocol"] == "tcp":
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                if item.get("sport"):
                    for option in (socket.SO_REUSEADDR, socket.SO_REUSEPORT):
                        sock.setsockopt(socket.SOL_SOCKET, option, 1)
                    sock.bind(
                        ("::" if family == socket.AF_INET6 else "", item["sport"])
                    )
                sock.settimeout(timeout)
                sock.connect(target)
            return "connected"
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            sock.settimeout(timeout)
            ident = item["port"] ^ 0x5A5A
            sock.sendto(query(ident), target)
            data, _ = sock.recvfrom(2048)
            ok = len(data) >= 2 and struct.unpack("!H", data[:2])[0] == ident
            return "connected" if ok else "error: unexpected reply"
    except ConnectionRefusedError:
        return "refused"
    except (socket.timeout, TimeoutError):
        return "blocked"
    except OSError as exc:
        return f"error: {exc.strerror or exc}"


def probe(items: list[dict], timeout: float) -> dict:
    if not items:
        return {}
    with ThreadPoolExecutor(max_workers=min(MAX_WORKERS, len(items))) as pool:
        results = pool.map(lambda item: probe_one(item, timeout), items)
        return {item["id"]: result for item, result in zip(items, results)}


def set_client_ports(low: int, high: int, reserved: str) -> None:
    """Stateless rules open replies to these client ports only; never use listed ones."""
    with open("/proc/sys/net/ipv4/ip_local_port_range", "w") as handle:
        handle.write(f"{low} {high}")
    if reserved:
        with open("/proc/sys/net/ipv4/ip_local_reserved_ports", "w") as handle:
            handle.write(reserved)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="netprobe")
    sub = parser.add_subparsers(dest="command", required=True)
    agent = sub.add_parser("serve")
    agent.add_argument("--tcp", type=ports, default=[])
    agent.add_argument("--udp", type=ports, default=[])
    args = parser.parse_args(argv)
    serve(args.tcp, args.udp)


if __name__ == "__main__":
    main()
