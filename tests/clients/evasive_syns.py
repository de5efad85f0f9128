#!/usr/bin/env python3
"""Sends TCP SYNs in evasive shapes and counts the SYN-ACKs that come back.

Usage: evasive_syns.py IFACE DST4 DST6 PORT SRC4 SRC6 KIND...

Each KIND is one SYN, from its own source port, to PORT:
  frag4-tiny   IPv4, split into 8-octet fragments: the first holds no whole TCP header
               (the tiny-fragment attack, RFC 1858 section 3.1)
  frag4-whole  IPv4, in two fragments, the first holding the whole 20-octet TCP header
  frag6        IPv6, in two fragments behind a Fragment header
  ext6-N       IPv6 behind N Destination Options headers (8 octets each), unfragmented
  plain4       IPv4, one ordinary SYN (a control)

Prints one line per KIND, "KIND N", N being the SYN-ACKs seen for it within the wait
(2 s after the last send). The receiving kernel reassembles fragments and walks any chain of
extension headers, so without a filter in front each KIND is answered once.
"""

import sys
import threading

from scapy.all import (
    IP,
    IPv6,
    TCP,
    AsyncSniffer,
    IPv6ExtHdrDestOpt,
    IPv6ExtHdrFragment,
    PadN,
    Raw,
    conf,
    fragment,
    send,
)

conf.verb = 0
WAIT_SECS = 2.0
FIRST_SPORT = 41000


def syn(sport, port, payload=b""):
    # Options make the header 32 octets, so that a 24-octet first fragment holds the fixed
    # 20-octet part but not all of it; a payload gives IPv6 a second fragment to carry.
    tcp = TCP(
        sport=sport,
        dport=port,
        flags="S",
        seq=7000 + sport,
        options=[("MSS", 1400), ("SAckOK", b""), ("WScale", 7), ("NOP", None)],
    )
    return tcp / Raw(payload) if payload else tcp


def ipv6_fragments(src, dst, tcp, first_len, ident):
    """The TCP segment (checksummed for src/dst) in two IPv6 fragments."""
    whole = bytes(IPv6(src=src, dst=dst) / tcp)[40:]
    pieces = [(0, 1, whole[:first_len]), (first_len // 8, 0, whole[first_len:])]
    return [
        IPv6(src=src, dst=dst)
        / IPv6ExtHdrFragment(nh=6, offset=off, m=more, id=ident)
        / Raw(chunk)
        for off, more, chunk in pieces
    ]


def packets(kind, sport, args):
    dst4, dst6, port, src4, src6 = args
    if kind == "plain4":
        return [IP(src=src4, dst=dst4) / syn(sport, port)]
    if kind == "frag4-tiny":
        return fragment(IP(src=src4, dst=dst4, id=sport) / syn(sport, port), fragsize=8)
    if kind == "frag4-whole":
        return fragment(IP(src=src4, dst=dst4, id=sport) / syn(sport, port), fragsize=24)
    if kind == "frag6":
        return ipv6_fragments(src6, dst6, syn(sport, port, b"x" * 32), 32, sport)
    if kind.startswith("ext6-"):
        pkt = IPv6(src=src6, dst=dst6)
        for _ in range(int(kind[len("ext6-"):])):
            pkt = pkt / IPv6ExtHdrDestOpt(options=[PadN(optdata=b"\0\0\0\0")])
        return [pkt / syn(sport, port)]
    raise SystemExit(f"unknown kind {kind!r}")


def main():
    if len(sys.argv) < 8:
        raise SystemExit(__doc__)
    iface = sys.argv[1]
    args = (sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5], sys.argv[6])
    kinds = sys.argv[7:]
    port = args[2]
    sports = {FIRST_SPORT + i: kind for i, kind in enumerate(kinds)}

    def is_synack(p):
        return TCP in p and p[TCP].sport == port and p[TCP].dport in sports and \
            (p[TCP].flags & 0x12) == 0x12

    started = threading.Event()
    sniffer = AsyncSniffer(iface=iface, lfilter=is_synack, store=True,
                           started_callback=started.set)
    sniffer.start()
    if not started.wait(10):
        raise SystemExit("sniffer did not start")
    for sport, kind in sports.items():
        for pkt in packets(kind, sport, args):
            send(pkt, iface=iface)
    # Waiting is the measurement: a SYN-ACK either comes within the wait or the SYN was
    # dropped (the kernel answers a SYN in well under a millisecond on a veth).
    threading.Event().wait(WAIT_SECS)
    seen = sniffer.stop() or []
    counts = {kind: 0 for kind in kinds}
    for p in seen:
        counts[sports[p[TCP].dport]] += 1
    for kind in kinds:
        print(kind, counts[kind])


if __name__ == "__main__":
    main()
