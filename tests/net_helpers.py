"""Listening sockets of a set of processes, and which of them are off the loopback interface."""

from __future__ import annotations

import ipaddress

import psutil


def listening(pids: set[int]) -> list[tuple[str, int, str]]:
    """(address, port, process name) of every listening TCP/UDP socket owned by ``pids``."""
    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid in pids and (c.status == psutil.CONN_LISTEN or (c.type == 2 and not c.raddr)):  # 2: SOCK_DGRAM
            try:
                name = psutil.Process(c.pid).name()
            except psutil.NoSuchProcess:
                continue
            out.append((c.laddr.ip, c.laddr.port, name))
    return out


def off_loopback(sockets) -> list:
    bad = []
    for ip, port, name in sockets:
        addr = ipaddress.ip_address(ip)
        if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
            addr = addr.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
        if str(addr) != "127.0.0.1":
            bad.append((ip, port, name))
    return bad
