// SPDX-License-Identifier: Apache-2.0
/*
 * smtp-edge shield: an XDP program that rate-limits new TCP connections (SYNs) per source and
 * drops banned sources, for the protected SMTP ports only. Everything else passes untouched.
 *
 * Frames: Ethernet, up to two 802.1Q/802.1ad tags, IPv4 or IPv6. A packet is *to a protected
 * port* when it is TCP whose header is found and whose destination port is in shield_cfg.ports,
 * or when it may be TCP but its port cannot be read:
 *   - an IPv4 or IPv6 fragment of a TCP segment (a later fragment carries no port; a first
 *     fragment too short for the 20-octet TCP header hides it, RFC 1858 §3 / RFC 3128);
 *   - IPv6 whose extension-header chain is longer than MAX_IPV6_EXT_HEADERS, or truncated.
 * Legitimate TCP is not fragmented: senders set DF and size segments by MSS and path MTU
 * discovery (RFC 1191, RFC 8201; IPv6 routers never fragment), so fragments of TCP are the
 * shape of an evasion, not of mail. Fragments of UDP, ICMP and other protocols pass untouched.
 *
 * For a packet to a protected port, in this order:
 *   1. source in the allowlist trie (shield_allow)   -> pass (shield_stats.passed)
 *   2. source banned and the ban not expired         -> drop (shield_stats.dropped_banned)
 *   3. port unreadable, or TCP fragmented            -> drop (shield_stats.dropped_malformed)
 *   4. SYN without ACK, the listener under SYN pressure and the source's bucket empty
 *                                                    -> drop (shield_stats.dropped_rate)
 *   5. otherwise                                     -> pass (shield_stats.passed)
 * The ban is judged on the source address alone (step 2 comes before any look at the TCP
 * header): whatever follows the IP header, a banned source reaches no protected port.
 * Sources are keyed as in shield.h: IPv4 by address, IPv6 by /64.
 *
 * SYN pressure (step 4): a SYN's source address is not verified, so a per-source budget
 * charged by every SYN can be spent by anyone who forges the victim's address. Budgets are
 * therefore charged and enforced only while all SYNs to protected ports together exceed
 * shield.pressure_syn_rate (and for a hold time after): below it the kernel's SYN queue and
 * SYN cookies cope unaided and forged SYNs cost the victim nothing; above it (a flood) the
 * flooding sources are cut to their budgets. See ARCHITECTURE.md, "Spoofed sources".
 *
 * Build: `cargo xtask build-ebpf` (clang-19 -O2 -g -target bpf; see ebpf/README.md).
 */
#include <linux/bpf.h>
#include <linux/if_ether.h>
#include <linux/in.h>
#include <linux/ip.h>
#include <linux/ipv6.h>
#include <linux/tcp.h>
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

#include "shield.h"

/* How many IPv6 extension headers are walked to find TCP. RFC 8200 §4.1 recommends at most
 * one of each (Destination Options twice): hop-by-hop, destination, routing, fragment,
 * authentication, destination, so a legitimate chain has six or fewer. A longer chain is
 * dropped on protected ports (dropped_malformed), not passed unjudged. */
#define MAX_IPV6_EXT_HEADERS 8
/* How many VLAN tags (802.1ad outer + 802.1Q inner) are skipped. */
#define MAX_VLAN_TAGS 2

char LICENSE[] SEC("license") = "GPL";

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_config);
} shield_cfg SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LPM_TRIE);
	__uint(max_entries, SHIELD_MAX_ALLOW);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, struct shield_lpm_key);
	__type(value, __u8);
} shield_allow SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SHIELD_MAX_BANS);
	__type(key, struct shield_source);
	/* Ban expiry in bpf_ktime_get_ns() nanoseconds (CLOCK_MONOTONIC). */
	__type(value, __u64);
} shield_bans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, SHIELD_DEFAULT_SOURCES);
	__type(key, struct shield_source);
	__type(value, struct shield_bucket);
} shield_rate SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_pressure);
} shield_pressure SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct shield_stats);
} shield_stats SEC(".maps");

struct vlan_hdr {
	__be16 tci;
	__be16 encapsulated_proto;
};

struct ipv6_frag {
	__u8 nexthdr;
	__u8 reserved;
	__be16 frag_off;
	__be32 identification;
};

/* IPv6 Authentication Header (RFC 4302 §2.2): its length is in 4-octet units, minus 2. */
struct ipv6_auth {
	__u8 nexthdr;
	__u8 hdrlen;
	__be16 reserved;
};

enum verdict_kind { PASSED, DROPPED_RATE, DROPPED_BANNED, DROPPED_MALFORMED };

/* What the network layer says follows it. */
enum l4_kind {
	/* Not TCP: not the shield's business. */
	L4_OTHER,
	/* A TCP header, whole, at `tcp`. */
	L4_TCP,
	/* Maybe TCP, but the header is not readable here (see the top of this file). */
	L4_UNREADABLE,
};

static __always_inline void count(enum verdict_kind kind)
{
	__u32 zero = 0;
	struct shield_stats *st = bpf_map_lookup_elem(&shield_stats, &zero);

	if (!st)
		return;
	/* Per-CPU value: no other CPU writes it, no atomics needed. */
	if (kind == PASSED)
		st->passed++;
	else if (kind == DROPPED_RATE)
		st->dropped_rate++;
	else if (kind == DROPPED_BANNED)
		st->dropped_banned++;
	else
		st->dropped_malformed++;
}

static __always_inline int is_protected(const struct shield_config *cfg, __u16 dport)
{
#pragma unroll
	for (int i = 0; i < SHIELD_MAX_PORTS; i++) {
		if (i >= cfg->nports)
			break;
		if (cfg->ports[i] == dport)
			return 1;
	}
	return 0;
}

static __always_inline int is_ipv6_ext(__u8 nexthdr)
{
	return nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
	       nexthdr == IPPROTO_DSTOPTS || nexthdr == IPPROTO_FRAGMENT || nexthdr == IPPROTO_AH;
}

/* Returns 1 if a SYN from `src` may pass now (and takes a token), 0 if the bucket is empty. */
static __always_inline int take_syn_token(const struct shield_config *cfg,
					  const struct shield_source *src, __u64 now)
{
	struct shield_bucket *b = bpf_map_lookup_elem(&shield_rate, src);

	if (!b) {
		struct shield_bucket fresh = { .tat_ns = now + cfg->syn_interval_ns };

		/* A full LRU map evicts its least recently used source: a new source always
		 * starts with a full bucket, so max_sources bounds memory, not admission. */
		bpf_map_update_elem(&shield_rate, src, &fresh, BPF_ANY);
		return 1;
	}
	/* GCRA. Two CPUs racing on one source may both pass: the limit is approximate by at
	 * most one SYN per concurrent CPU, which is fine for a flood guard. */
	__u64 tat = b->tat_ns;

	if (tat < now)
		tat = now;
	if (tat - now > cfg->syn_tolerance_ns)
		return 0;
	b->tat_ns = tat + cfg->syn_interval_ns;
	return 1;
}

/* Feeds one SYN to the global bucket; returns 1 if the listener is under SYN pressure. */
static __always_inline int under_pressure(const struct shield_config *cfg, __u64 now)
{
	__u32 zero = 0;
	struct shield_pressure *p;
	__u64 tat;

	if (!cfg->pressure_interval_ns)
		return 1;
	p = bpf_map_lookup_elem(&shield_pressure, &zero);
	if (!p)
		return 1;
	/* GCRA over all sources. Shared by every CPU without atomics: a race loses an update
	 * or two, which moves the onset of pressure by as many SYNs. */
	tat = p->tat_ns;
	if (tat < now)
		tat = now;
	if (tat - now > cfg->pressure_tolerance_ns)
		p->until_ns = now + cfg->pressure_hold_ns;
	else
		p->tat_ns = tat + cfg->pressure_interval_ns;
	return now < p->until_ns;
}

/* An IPv4 packet: fills the source keys and says what follows. */
static __always_inline enum l4_kind parse_ipv4(struct iphdr *ip, void *end,
					       struct shield_lpm_key *full,
					       struct shield_source *src, struct tcphdr **tcp,
					       int *fragmented)
{
	__u32 hlen, l4_len;
	__u16 frag;

	if (ip->ihl < 5 || ip->protocol != IPPROTO_TCP)
		/* A header shorter than 20 octets is refused by the kernel's own checks
		 * (ip_rcv_core); other protocols are not ours to judge. */
		return L4_OTHER;
	full->addr[10] = 0xff;
	full->addr[11] = 0xff;
	__builtin_memcpy(&full->addr[12], &ip->saddr, 4);
	__builtin_memcpy(src->addr, full->addr, 16);

	frag = bpf_ntohs(ip->frag_off);
	*fragmented = (frag & 0x3fff) != 0; /* more-fragments flag or an offset */
	if (frag & 0x1fff)
		/* A later fragment: it carries no TCP header, so no port. */
		return L4_UNREADABLE;
	hlen = ip->ihl * 4;
	l4_len = bpf_ntohs(ip->tot_len);
	/* By the IP length, not data_end: a short frame is padded to 60 octets on the wire,
	 * and the padding must not pass for a TCP header (a tiny first fragment). */
	if (l4_len < hlen + sizeof(struct tcphdr))
		return L4_UNREADABLE;
	*tcp = (void *)ip + hlen;
	if ((void *)(*tcp + 1) > end)
		return L4_UNREADABLE;
	return L4_TCP;
}

/* An IPv6 packet: walks the extension headers, fills the source keys and says what follows. */
static __always_inline enum l4_kind parse_ipv6(struct ipv6hdr *ip6, void *end,
					       struct shield_lpm_key *full,
					       struct shield_source *src, struct tcphdr **tcp,
					       int *fragmented)
{
	void *cur = ip6 + 1;
	void *payload_end = cur + bpf_ntohs(ip6->payload_len);
	__u8 nexthdr = ip6->nexthdr;

	__builtin_memcpy(full->addr, &ip6->saddr, 16);
	/* Keyed by /64: the interface identifier is zeroed. */
	__builtin_memcpy(src->addr, full->addr, 8);

#pragma unroll
	for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
		if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
		    nexthdr == IPPROTO_DSTOPTS) {
			struct ipv6_opt_hdr *opt = cur;

			if ((void *)(opt + 1) > end)
				return L4_UNREADABLE;
			nexthdr = opt->nexthdr;
			cur += (opt->hdrlen + 1) * 8;
		} else if (nexthdr == IPPROTO_AH) {
			struct ipv6_auth *ah = cur;

			if ((void *)(ah + 1) > end)
				return L4_UNREADABLE;
			nexthdr = ah->nexthdr;
			cur += (ah->hdrlen + 2) * 4;
		} else if (nexthdr == IPPROTO_FRAGMENT) {
			struct ipv6_frag *frag = cur;

			if ((void *)(frag + 1) > end)
				return L4_UNREADABLE;
			*fragmented = 1;
			nexthdr = frag->nexthdr;
			cur = frag + 1;
			if (frag->frag_off & bpf_htons(0xfff8))
				/* A later fragment: no header of the fragmentable part is
				 * here. Its first header's type is, though: a fragment of
				 * UDP or ICMPv6 is not ours. */
				return (nexthdr == IPPROTO_TCP || is_ipv6_ext(nexthdr)) ?
					       L4_UNREADABLE :
					       L4_OTHER;
		} else {
			break;
		}
	}
	if (is_ipv6_ext(nexthdr))
		/* Still inside the header chain after the walk limit: TCP may follow. */
		return L4_UNREADABLE;
	if (nexthdr != IPPROTO_TCP)
		return L4_OTHER;
	*tcp = cur;
	/* Payload length, not data_end, bounds the header (see parse_ipv4). */
	if ((void *)(*tcp + 1) > end || (void *)(*tcp + 1) > payload_end)
		return L4_UNREADABLE;
	return L4_TCP;
}

SEC("xdp")
int shield_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct shield_lpm_key full;
	struct shield_source src;
	struct tcphdr *tcp = NULL;
	enum l4_kind l4;
	int fragmented = 0;
	void *cur;
	__u16 proto;
	__u32 zero = 0;

	__builtin_memset(&full, 0, sizeof(full));
	__builtin_memset(&src, 0, sizeof(src));
	full.prefixlen = 128;
	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	proto = eth->h_proto;
	cur = eth + 1;

#pragma unroll
	for (int i = 0; i < MAX_VLAN_TAGS; i++) {
		struct vlan_hdr *vlan = cur;

		if (proto != bpf_htons(ETH_P_8021Q) && proto != bpf_htons(ETH_P_8021AD))
			break;
		if ((void *)(vlan + 1) > end)
			return XDP_PASS;
		proto = vlan->encapsulated_proto;
		cur = vlan + 1;
	}

	if (proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = cur;

		if ((void *)(ip + 1) > end)
			return XDP_PASS;
		l4 = parse_ipv4(ip, end, &full, &src, &tcp, &fragmented);
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		l4 = parse_ipv6(ip6, end, &full, &src, &tcp, &fragmented);
	} else {
		return XDP_PASS;
	}
	if (l4 == L4_OTHER)
		return XDP_PASS;

	struct shield_config *cfg = bpf_map_lookup_elem(&shield_cfg, &zero);

	if (!cfg)
		return XDP_PASS;
	/* A readable port decides; an unreadable one may be any port, so it counts as ours. */
	if (l4 == L4_TCP && (!tcp || !is_protected(cfg, bpf_ntohs(tcp->dest))))
		return XDP_PASS;

	if (bpf_map_lookup_elem(&shield_allow, &full)) {
		count(PASSED);
		return XDP_PASS;
	}

	__u64 now = bpf_ktime_get_ns();
	__u64 *ban_until = bpf_map_lookup_elem(&shield_bans, &src);

	if (ban_until) {
		if (now < *ban_until) {
			count(DROPPED_BANNED);
			/* XDP_DROP: userspace banned this source (IPv6: its /64) until
			 * *ban_until; every segment to a protected port is refused, so a banned
			 * client can neither open nor keep a session. */
			return XDP_DROP;
		}
		/* Expired: forget it so the map does not fill with stale bans. */
		bpf_map_delete_elem(&shield_bans, &src);
	}

	if (l4 != L4_TCP || fragmented || !tcp) {
		count(DROPPED_MALFORMED);
		/* XDP_DROP: TCP to a protected port whose header cannot be judged here (a
		 * fragment, a tiny first fragment, an overlong IPv6 header chain, a truncated
		 * header). Passing it would let a SYN past the rate limit once the kernel
		 * reassembles it; no legitimate sender fragments TCP (see the top of the file). */
		return XDP_DROP;
	}

	if (tcp->syn && !tcp->ack && under_pressure(cfg, now) &&
	    !take_syn_token(cfg, &src, now)) {
		count(DROPPED_RATE);
		/* XDP_DROP: under SYN pressure, a new connection over the source's SYN rate
		 * (shield.syn_rate per second, shield.syn_burst at once). Dropping the SYN before the kernel
		 * allocates a request socket is the point; a well-behaved client retransmits
		 * it after its SYN timeout, when the bucket has refilled. */
		return XDP_DROP;
	}

	count(PASSED);
	return XDP_PASS;
}
