/* SPDX-License-Identifier: Apache-2.0 */
/*
 * smtp-edge shield: the map layouts shared by the XDP program (ebpf/shield.c) and userspace
 * (edge/src/shield/maps.rs, which mirrors every struct here #[repr(C)] with compile-time size
 * asserts). This file is the single definition: change a layout here, then in maps.rs, then run
 * `cargo xtask build-ebpf` to rebuild the checked-in ebpf/shield.o.
 *
 * All fields are in host byte order unless the name says otherwise.
 */
#ifndef SMTP_EDGE_SHIELD_H
#define SMTP_EDGE_SHIELD_H

#include <linux/types.h>

/* Most protected TCP ports (`shield.ports`). */
#define SHIELD_MAX_PORTS 16
/* Capacity of the ban map (`shield_bans`). Userspace refuses bans past it. */
#define SHIELD_MAX_BANS 65536
/* Capacity of the allowlist trie (`shield_allow`, `shield.allow`). */
#define SHIELD_MAX_ALLOW 1024
/* Default capacity of the per-source SYN buckets; userspace resizes it to `shield.max_sources`
 * before the map is created. */
#define SHIELD_DEFAULT_SOURCES 65536

/*
 * A source, as the key of `shield_bans` and `shield_rate`: 16 bytes.
 * IPv4 a.b.c.d is the IPv4-mapped IPv6 address ::ffff:a.b.c.d (RFC 4291 §2.5.5.2).
 * IPv6 is keyed by its /64: the low 8 bytes are zero, so one ban or one bucket covers every
 * address a single host can pick from its prefix (RFC 4291 §2.5.4 interface identifiers).
 */
struct shield_source {
	__u8 addr[16];
};

/* One `shield_rate` entry: the GCRA "theoretical arrival time" of the next SYN, in
 * bpf_ktime_get_ns() nanoseconds (CLOCK_MONOTONIC). Equivalent to a token bucket of
 * `syn_burst` tokens refilled at `syn_rate` per second. */
struct shield_bucket {
	__u64 tat_ns;
};

/* `shield_allow` key (BPF_MAP_TYPE_LPM_TRIE): prefixlen counts bits of `addr`, so an IPv4
 * prefix a.b.c.d/n is stored as ::ffff:a.b.c.d/(96 + n). */
struct shield_lpm_key {
	__u32 prefixlen;
	__u8 addr[16];
};

/* `shield_cfg[0]`, written by userspace before the program is attached. */
struct shield_config {
	/* Emission interval of the SYN bucket: 1e9 / syn_rate. */
	__u64 syn_interval_ns;
	/* Burst tolerance: (syn_burst - 1) * syn_interval_ns. */
	__u64 syn_tolerance_ns;
	/* As configured, for inspection (`bpftool map dump`). */
	__u32 syn_rate;
	__u32 syn_burst;
	/* Number of valid entries in `ports`. */
	__u32 nports;
	__u32 _pad;
	/* Protected TCP destination ports; 0 never matches. */
	__u16 ports[SHIELD_MAX_PORTS];
	/* SYN pressure: the emission interval of the global bucket, 1e9 / pressure_syn_rate;
	 * 0 means always under pressure (per-source limits always apply). */
	__u64 pressure_interval_ns;
	/* Burst tolerance of the global bucket (a tenth of a second of pressure_syn_rate). */
	__u64 pressure_tolerance_ns;
	/* How long pressure lasts after the global bucket was last found empty. */
	__u64 pressure_hold_ns;
	/* As configured, for inspection. */
	__u32 pressure_syn_rate;
	__u32 _pad2;
};

/* `shield_pressure[0]` (shared by all CPUs): is the listener under SYN pressure? SYNs to
 * protected ports from every source go through one GCRA bucket of pressure_syn_rate; while it
 * is empty, and for pressure_hold_ns after, per-source SYN budgets apply. Per-source budgets
 * are keyed on an address nobody has verified yet (a SYN's source can be forged): applied at
 * all times, they would let anyone spend a victim's budget with forged SYNs. */
struct shield_pressure {
	/* Theoretical arrival time of the next SYN, all sources together. */
	__u64 tat_ns;
	/* Under pressure until then (bpf_ktime_get_ns()). */
	__u64 until_ns;
};

/* `shield_stats[0]` (per CPU): packets to protected ports (see shield.c for which). */
struct shield_stats {
	/* Let through (allowlisted, or neither banned nor over the SYN rate). */
	__u64 passed;
	/* SYNs dropped because the source's bucket was empty (only under SYN pressure). */
	__u64 dropped_rate;
	/* Segments dropped because the source was banned. */
	__u64 dropped_banned;
	/* Packets dropped because their TCP header could not be judged: fragments of TCP (the
	 * first too short to hold the header, or any later one), an IPv6 header chain longer
	 * than the walk limit, or a truncated header. */
	__u64 dropped_malformed;
};

#endif /* SMTP_EDGE_SHIELD_H */
