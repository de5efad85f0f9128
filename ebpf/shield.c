// SPDX-License-Identifier: Apache-2.0
/*
 * smtp-edge shield: an XDP program that rate-limits new TCP connections (SYNs) per source and
 * drops banned sources, for the protected SMTP ports only. Everything else passes untouched.
 *
 * For a TCP segment to a port in shield_cfg.ports (Ethernet, up to two 802.1Q/802.1ad tags,
 * IPv4 or IPv6), in this order:
 *   1. source in the allowlist trie (shield_allow)   -> pass
 *   2. source banned and the ban not expired         -> drop (shield_stats.dropped_banned)
 *   3. SYN without ACK and the source's bucket empty -> drop (shield_stats.dropped_rate)
 *   4. otherwise                                     -> pass (shield_stats.passed)
 * Sources are keyed as in shield.h: IPv4 by address, IPv6 by /64.
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

/* How many IPv6 extension headers are walked to find TCP (RFC 8200 §4.1 order). */
#define MAX_IPV6_EXT_HEADERS 4
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

enum verdict_kind { PASSED, DROPPED_RATE, DROPPED_BANNED };

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
	else
		st->dropped_banned++;
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

SEC("xdp")
int shield_xdp(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct shield_lpm_key full;
	struct shield_source src;
	struct tcphdr *tcp;
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
		if (ip->ihl < 5 || ip->protocol != IPPROTO_TCP)
			return XDP_PASS;
		/* A non-first fragment carries no TCP header: nothing to judge. */
		if (ip->frag_off & bpf_htons(0x1fff))
			return XDP_PASS;
		full.addr[10] = 0xff;
		full.addr[11] = 0xff;
		__builtin_memcpy(&full.addr[12], &ip->saddr, 4);
		__builtin_memcpy(src.addr, full.addr, 16);
		cur = (void *)ip + ip->ihl * 4;
	} else if (proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = cur;
		__u8 nexthdr;

		if ((void *)(ip6 + 1) > end)
			return XDP_PASS;
		nexthdr = ip6->nexthdr;
		cur = ip6 + 1;
#pragma unroll
		for (int i = 0; i < MAX_IPV6_EXT_HEADERS; i++) {
			if (nexthdr == IPPROTO_HOPOPTS || nexthdr == IPPROTO_ROUTING ||
			    nexthdr == IPPROTO_DSTOPTS) {
				struct ipv6_opt_hdr *opt = cur;

				if ((void *)(opt + 1) > end)
					return XDP_PASS;
				nexthdr = opt->nexthdr;
				cur += (opt->hdrlen + 1) * 8;
			} else if (nexthdr == IPPROTO_FRAGMENT) {
				struct ipv6_frag *frag = cur;

				if ((void *)(frag + 1) > end)
					return XDP_PASS;
				/* A non-first fragment carries no TCP header. */
				if (frag->frag_off & bpf_htons(0xfff8))
					return XDP_PASS;
				nexthdr = frag->nexthdr;
				cur = frag + 1;
			} else {
				break;
			}
		}
		if (nexthdr != IPPROTO_TCP)
			return XDP_PASS;
		__builtin_memcpy(full.addr, &ip6->saddr, 16);
		/* Keyed by /64: the interface identifier is zeroed. */
		__builtin_memcpy(src.addr, full.addr, 8);
	} else {
		return XDP_PASS;
	}

	tcp = cur;
	if ((void *)(tcp + 1) > end)
		return XDP_PASS;

	struct shield_config *cfg = bpf_map_lookup_elem(&shield_cfg, &zero);

	if (!cfg || !is_protected(cfg, bpf_ntohs(tcp->dest)))
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

	if (tcp->syn && !tcp->ack && !take_syn_token(cfg, &src, now)) {
		count(DROPPED_RATE);
		/* XDP_DROP: a new connection over the source's SYN rate (shield.syn_rate per
		 * second, shield.syn_burst at once). Dropping the SYN before the kernel
		 * allocates a request socket is the point; a well-behaved client retransmits
		 * it after its SYN timeout, when the bucket has refilled. */
		return XDP_DROP;
	}

	count(PASSED);
	return XDP_PASS;
}
