//! Unit tests that need no privilege: map layouts against the embedded object, keys, prefixes,
//! config validation. The kernel side is in `tests/blackbox/shield.rs`.

use std::mem::size_of;
use std::net::IpAddr;

use super::maps::{self, lpm_key, lpm_prefix, Bucket, Config, LpmKey, Pressure, Source, Stats};
use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// `BPF_MAP_TYPE_*` from `<linux/bpf.h>`.
const HASH: u32 = 1;
const ARRAY: u32 = 2;
const PERCPU_ARRAY: u32 = 6;
const LPM_TRIE: u32 = 11;
const LRU_HASH: u32 = 9;

#[test]
fn embedded_object_maps_match_the_rust_mirrors() {
    let obj = aya_obj::Object::parse(loader::object()).expect("ebpf/shield.o parses");
    let expect: [(&str, u32, usize, usize, u32); 6] = [
        (maps::MAP_CFG, ARRAY, 4, size_of::<Config>(), 1),
        (
            maps::MAP_ALLOW,
            LPM_TRIE,
            size_of::<LpmKey>(),
            1,
            maps::MAX_ALLOW as u32,
        ),
        (maps::MAP_BANS, HASH, size_of::<Source>(), 8, maps::MAX_BANS),
        (
            maps::MAP_RATE,
            LRU_HASH,
            size_of::<Source>(),
            size_of::<Bucket>(),
            65_536,
        ),
        (maps::MAP_STATS, PERCPU_ARRAY, 4, size_of::<Stats>(), 1),
        (maps::MAP_PRESSURE, ARRAY, 4, size_of::<Pressure>(), 1),
    ];
    for (name, kind, key, value, max) in expect {
        let map = obj
            .maps
            .get(name)
            .unwrap_or_else(|| panic!("no map {name} in ebpf/shield.o"));
        assert_eq!(map.map_type(), kind, "{name} type");
        assert_eq!(map.key_size() as usize, key, "{name} key size");
        assert_eq!(map.value_size() as usize, value, "{name} value size");
        assert_eq!(map.max_entries(), max, "{name} max_entries");
    }
    assert_eq!(
        obj.maps.len(),
        expect.len(),
        "unexpected maps: {:?}",
        obj.maps.keys()
    );
    assert!(
        obj.programs.contains_key(maps::PROGRAM),
        "no program {} in {:?}",
        maps::PROGRAM,
        obj.programs.keys()
    );
}

#[test]
fn embedded_object_is_aligned() {
    assert_eq!(loader::object().as_ptr() as usize % 8, 0);
    assert_eq!(&loader::object()[..4], b"\x7fELF");
}

#[test]
fn shield_is_shareable_across_workers() {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Shield>();
}

#[test]
fn sources_ipv4_mapped_and_ipv6_by_64() {
    let v4 = Source::from_ip(ip("192.0.2.7"));
    assert_eq!(&v4.addr[..12], &[0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff]);
    assert_eq!(&v4.addr[12..], &[192, 0, 2, 7]);
    // A dual-stack socket reports an IPv4 peer as ::ffff:a.b.c.d: the same source.
    assert_eq!(Source::from_ip(ip("::ffff:192.0.2.7")), v4);
    assert_eq!(v4.prefix().to_string(), "192.0.2.7/32");

    let a = Source::from_ip(ip("2001:db8:1:2:aaaa::1"));
    let b = Source::from_ip(ip("2001:db8:1:2:ffff:ffff:ffff:ffff"));
    let other = Source::from_ip(ip("2001:db8:1:3::1"));
    assert_eq!(a, b, "one /64, one source");
    assert_ne!(a, other);
    assert_eq!(a.prefix().to_string(), "2001:db8:1:2::/64");
}

#[test]
fn lpm_keys_put_ipv4_under_the_mapped_prefix() {
    for (text, len) in [
        ("10.0.0.0/8", 104),
        ("192.0.2.1", 128),
        ("0.0.0.0/0", 96),
        ("fd00::/8", 8),
        ("2001:db8::1", 128),
    ] {
        let p = crate::cidr::parse(text).unwrap();
        let key = lpm_key(&p);
        assert_eq!(key.prefix_len(), len, "{text}");
        assert_eq!(lpm_prefix(&key), Some(p), "{text} round trip");
    }
}

#[test]
fn config_value_encodes_gcra() {
    let c = Config::new(10, 20, &[25, 587]);
    assert_eq!(c.syn_interval_ns, 100_000_000);
    assert_eq!(c.syn_tolerance_ns, 19 * 100_000_000);
    assert_eq!(
        (c.nports, c.ports[0], c.ports[1], c.ports[2]),
        (2, 25, 587, 0)
    );
    assert_eq!(
        Config::new(1, 1, &[25]).syn_tolerance_ns,
        0,
        "burst 1: no tolerance"
    );
    assert_eq!(c.pressure_interval_ns, 0, "no threshold: always limited");

    // 1000 SYNs/s in all: a global bucket of 100 (a tenth of a second), held for 2 s.
    let p = Config::with_pressure(10, 20, &[25], 1000);
    assert_eq!(p.pressure_interval_ns, 1_000_000);
    assert_eq!(p.pressure_tolerance_ns, 99 * 1_000_000);
    assert_eq!(p.pressure_hold_ns, 2_000_000_000);
    assert_eq!(
        (p.pressure_syn_rate, p.syn_interval_ns),
        (1000, 100_000_000)
    );
    assert_eq!(
        Config::with_pressure(10, 20, &[25], 5).pressure_tolerance_ns,
        0,
        "a rate under 10/s has a burst of one"
    );
}

fn problems(cfg: &ShieldConfig) -> Vec<String> {
    cfg.validate()
        .into_iter()
        .map(|(k, p)| format!("{k}: {p}"))
        .collect()
}

#[test]
fn default_config_is_valid_and_disabled() {
    let cfg = ShieldConfig::default();
    assert!(!cfg.enabled);
    assert_eq!(problems(&cfg), Vec::<String>::new());
    assert!(matches!(Shield::load(&cfg), Err(ShieldError::Disabled)));
}

#[test]
fn config_validation_names_every_key() {
    let cfg = ShieldConfig {
        enabled: true,
        interfaces: vec!["lo".into(), "eth9-no-such".into(), "lo".into()],
        ports: vec![25, 0, 25],
        allow: vec![
            "10.0.0.0/8".into(),
            "10.0.0.1/8".into(),
            "fd00::/129".into(),
        ],
        syn_rate: 0,
        syn_burst: 2_000_000,
        pressure_syn_rate: 1_000_001,
        max_sources: 1,
        ban_secs: 0,
        ..ShieldConfig::default()
    };
    let got = problems(&cfg);
    let want = [
        "shield.interfaces[1]: no such interface \"eth9-no-such\"",
        "shield.interfaces[2]: \"lo\" is listed twice",
        "shield.ports[1]: must be 1..=65535",
        "shield.ports[2]: 25 is listed twice",
        "shield.allow[1]: \"10.0.0.1/8\" has host bits set; did you mean 10.0.0.0/8?",
        "shield.allow[2]: prefix length 129 is longer than 128 bits",
        "shield.syn_rate: must be at least 1",
        "shield.syn_burst: must be at most 1000000, got 2000000",
        "shield.pressure_syn_rate: must be at most 1000000 (0: limits always apply), got 1000001",
        "shield.max_sources: must be 16..=16777216, got 1",
        "shield.ban_secs: must be 1..=2592000 (30 days), got 0",
    ];
    assert_eq!(got, want);
    let e = Shield::load(&cfg).unwrap_err().to_string();
    assert!(e.contains("shield.syn_rate: must be at least 1"), "{e}");
}

#[test]
fn config_validation_of_required_and_empty_lists() {
    let cfg = ShieldConfig {
        required: true,
        ..ShieldConfig::default()
    };
    assert_eq!(
        problems(&cfg),
        ["shield.required: is true but shield.enabled is false"]
    );
    let cfg = ShieldConfig {
        enabled: true,
        ports: vec![],
        ..ShieldConfig::default()
    };
    assert_eq!(
        problems(&cfg),
        [
            "shield.interfaces: must name at least one interface when shield.enabled is true",
            "shield.ports: must list at least one port",
        ]
    );
    // A disabled section is checked for typos but not against this machine's interfaces.
    let cfg = ShieldConfig {
        interfaces: vec!["eth9".into()],
        ..ShieldConfig::default()
    };
    assert_eq!(problems(&cfg), Vec::<String>::new());
}

#[test]
fn config_deserializes_with_defaults_and_refuses_unknown_keys() {
    let cfg: ShieldConfig = toml::from_str(
        "enabled = true\ninterfaces = [\"lo\"]\nallow = [\"192.0.2.0/24\"]\nsyn_rate = 5\n",
    )
    .unwrap();
    assert_eq!(cfg.syn_rate, 5);
    assert_eq!(cfg.syn_burst, ShieldConfig::default().syn_burst);
    assert_eq!(
        cfg.pressure_syn_rate, 1000,
        "limits apply under pressure only"
    );
    assert_eq!(cfg.ports, [25, 465, 587]);
    assert_eq!(
        cfg.allow_prefixes().unwrap(),
        vec![crate::cidr::parse("192.0.2.0/24").unwrap()]
    );
    let e = toml::from_str::<ShieldConfig>("syn_rat = 5\n").unwrap_err();
    assert!(e.to_string().contains("unknown field `syn_rat`"), "{e}");
}
