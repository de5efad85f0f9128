//! The XDP shield against real traffic, in two network namespaces joined by a veth pair.
//!
//! Each test makes `se-srv-<pid>-<tag>` and `se-cli-<pid>-<tag>` (removed on drop, with the
//! veth pair and its VLAN), loads the shield on the server's veth through the library from a
//! thread that has entered the server namespace, listens with plain TCP listeners there, and
//! connects (or floods with `hping3`, bounded in count) from the client namespace. Nothing
//! leaves those namespaces.
//!
//! Needs root, BPF with BTF, `ip` (iproute2) and `hping3`. Without them the tests skip with a
//! message, except under `CI=true`, where they fail.

use std::net::{IpAddr, SocketAddr, TcpListener};
use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use smtp_edge::shield::{AttachMode, Shield, ShieldConfig};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use crate::harness::{run_client, wait_until};
use crate::shield_lab::{
    in_netns, ip, require, Lab, PinDir, CLI4, CLI4_ALLOWED, CLI4_SPARE, CLI6, CLI6_SAME_64,
    CLI_VLAN, PROTECTED, SRV4, SRV6, SRV_VLAN, UNPROTECTED,
};

/// Accepts (and closes) every connection waiting on `l`; how many.
fn drain(l: &TcpListener) -> usize {
    let mut n = 0;
    while l.accept().is_ok() {
        n += 1;
    }
    n
}

/// A fast SYN source of its own; both limits: count and wall clock.
#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn syn_flood_is_dropped_and_accepts_stay_within_the_bucket() {
    let lab = Lab::new("flood");
    require("hping3", "hping3");
    let (rate, burst) = (5u32, 10u32);
    let shield = lab.shield(ShieldConfig {
        syn_rate: rate,
        syn_burst: burst,
        // Buckets from the first SYN: this measures the bucket, not the pressure threshold.
        pressure_syn_rate: 0,
        ..ShieldConfig::default()
    });
    let listener = lab.listen(PROTECTED);

    // 2000 SYNs, 100 µs apart, from CLI4: bounded in count (-c) and by the client deadline.
    let started = Instant::now();
    let out = run_client(
        "ip",
        &[
            "netns", "exec", &lab.cli, "hping3", "-q", "-S", "-c", "2000", "-i", "u100", "-p",
            "2525", SRV4,
        ],
        b"",
        Duration::from_secs(60),
    );
    let elapsed = started.elapsed().as_secs_f64();
    let c = shield.counters().unwrap();
    eprintln!("hping3: {:?} in {elapsed:.2}s; {c:?}", out.status);
    let allowed = f64::from(burst) + f64::from(rate) * elapsed + 2.0;
    assert!(
        c.dropped_rate as f64 >= 2000.0 - allowed,
        "flood of 2000 SYNs in {elapsed:.2}s: only {} dropped over the rate ({c:?})",
        c.dropped_rate
    );
    assert_eq!(c.dropped_banned, 0);

    // Real connections from a fresh source, all at once: the listener accepts at most the burst
    // plus what the rate refills in the time taken (retransmitted SYNs included).
    let dst = SocketAddr::new(ip(SRV4), PROTECTED);
    let src = SocketAddr::new(ip(CLI4_SPARE), 0);
    let started = Instant::now();
    let sockets: Vec<Socket> = in_netns(&lab.cli, move || {
        (0..60)
            .map(|_| {
                let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP)).unwrap();
                s.set_nonblocking(true).unwrap();
                s.bind(&SockAddr::from(src)).unwrap();
                let _ = s.connect(&SockAddr::from(dst)); // EINPROGRESS
                s
            })
            .collect()
    });
    let mut accepted = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        accepted += drain(&listener);
        thread::sleep(Duration::from_millis(20)); // poll interval; the loop is time-bounded
    }
    accepted += drain(&listener);
    let elapsed = started.elapsed().as_secs_f64();
    let bound = f64::from(burst) + f64::from(rate) * elapsed + 1.0;
    eprintln!("accepted {accepted} of 60 in {elapsed:.2}s (bound {bound:.1})");
    assert!(accepted >= burst as usize, "the burst passes: {accepted}");
    assert!(
        accepted as f64 <= bound,
        "accepted {accepted} > burst {burst} + rate {rate}/s x {elapsed:.2}s"
    );
    drop(sockets);
}

#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn banned_source_is_dropped_until_the_ban_expires() {
    let lab = Lab::new("ban");
    let shield = lab.shield(ShieldConfig {
        syn_rate: 1000,
        syn_burst: 1000,
        ..ShieldConfig::default()
    });
    let listener = lab.listen(PROTECTED);
    let _other = lab.listen(UNPROTECTED);

    lab.assert_connects(CLI4, SRV4, PROTECTED, "not banned yet");
    let ban = Duration::from_secs(3);
    shield.ban(ip(CLI4), ban).unwrap();
    shield.ban(ip(CLI_VLAN), ban).unwrap();
    let banned_at = Instant::now();
    assert_eq!(shield.bans_active().unwrap(), 2);
    assert!(shield.is_banned(ip(CLI4)).unwrap());
    assert!(!shield.is_banned(ip(CLI4_ALLOWED)).unwrap());
    let list = shield.list().unwrap();
    assert!(
        list.iter()
            .any(|(p, left)| p.to_string() == "10.77.0.2/32" && *left <= ban),
        "{list:?}"
    );

    lab.assert_dropped(CLI4, SRV4, PROTECTED, "banned");
    if lab.vlan {
        lab.assert_dropped(CLI_VLAN, SRV_VLAN, PROTECTED, "banned, over 802.1Q VLAN 10");
    }
    lab.assert_connects(CLI4_ALLOWED, SRV4, PROTECTED, "another address, not banned");
    lab.assert_connects(CLI4, SRV4, UNPROTECTED, "port not protected");
    let c = shield.counters().unwrap();
    assert!(c.dropped_banned > u64::from(lab.vlan), "{c:?}");
    assert_eq!(c.dropped_rate, 0, "{c:?}");

    // After expiry the same source connects again (with its own SYN retransmits as the clock).
    let back = wait_until(Duration::from_secs(10), || {
        lab.connect(CLI4, SRV4, PROTECTED, Duration::from_secs(2))
            .ok()
            .map(|()| banned_at.elapsed())
    })
    .expect("still dropped 10 s after a 3 s ban");
    assert!(
        back >= ban - Duration::from_millis(100),
        "let in after {back:?}"
    );
    assert_eq!(
        shield.bans_active().unwrap(),
        0,
        "expired bans are not listed"
    );
    // The VLAN source never came back, so its expired entry is still in the kernel map (the
    // program drops an entry only when its source sends again): a sweep clears it, once.
    let mut sweeper = shield.sweeper().unwrap();
    let sweep = sweeper.sweep(1, || {}).unwrap();
    assert_eq!(
        (sweep.live, sweep.removed),
        (vec![], 1),
        "one expired entry left behind"
    );
    assert_eq!(sweeper.sweep(1, || {}).unwrap().removed, 0);

    // unban lifts a long ban at once.
    shield.ban(ip(CLI4), Duration::from_secs(600)).unwrap();
    lab.assert_dropped(CLI4, SRV4, PROTECTED, "banned again");
    assert!(shield.unban(ip(CLI4)).unwrap());
    assert!(!shield.unban(ip(CLI4)).unwrap());
    assert!(!shield.is_banned(ip(CLI4)).unwrap());
    lab.assert_connects(CLI4, SRV4, PROTECTED, "unbanned");
    drain(&listener);
}

#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn allowlisted_source_is_never_limited_and_other_ports_are_untouched() {
    let lab = Lab::new("allow");
    let shield = lab.shield(ShieldConfig {
        syn_rate: 1,
        syn_burst: 1,
        pressure_syn_rate: 0,
        allow: vec![format!("{CLI4_ALLOWED}/32"), "fd00:77::3/128".into()],
        ..ShieldConfig::default()
    });
    let listener = lab.listen(PROTECTED);
    let other = lab.listen(UNPROTECTED);
    // Allowed even when banned: the allowlist is judged first.
    shield
        .ban(ip(CLI4_ALLOWED), Duration::from_secs(600))
        .unwrap();

    for i in 0..20 {
        lab.assert_connects(CLI4_ALLOWED, SRV4, PROTECTED, &format!("allowlisted, #{i}"));
        lab.assert_connects(
            CLI4,
            SRV4,
            UNPROTECTED,
            &format!("port not protected, #{i}"),
        );
        drain(&listener);
        drain(&other);
    }
    let c = shield.counters().unwrap();
    assert_eq!((c.dropped_rate, c.dropped_banned), (0, 0), "{c:?}");

    // The same rate for a source not on the list: one SYN, then nothing until it refills.
    lab.assert_connects(CLI4, SRV4, PROTECTED, "the burst of 1");
    lab.assert_dropped(CLI4, SRV4, PROTECTED, "over 1 SYN/s");
    assert!(shield.counters().unwrap().dropped_rate >= 1);
}

#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn ipv6_ban_covers_the_whole_64() {
    let lab = Lab::new("v6");
    let shield = lab.shield(ShieldConfig {
        syn_rate: 1000,
        syn_burst: 1000,
        ..ShieldConfig::default()
    });
    let _listener = lab.listen(PROTECTED);
    lab.assert_connects(CLI6_SAME_64, SRV6, PROTECTED, "not banned yet");

    shield.ban(ip(CLI6), Duration::from_secs(600)).unwrap();
    let list = shield.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0].0.to_string(), "fd00:77::/64");
    lab.assert_dropped(CLI6, SRV6, PROTECTED, "banned");
    lab.assert_dropped(
        CLI6_SAME_64,
        SRV6,
        PROTECTED,
        "same /64 as the banned address",
    );
    lab.assert_connects(
        CLI4,
        SRV4,
        PROTECTED,
        "IPv4 of the same host is another source",
    );
    assert!(shield.counters().unwrap().dropped_banned >= 2);

    assert!(
        shield.unban(ip(CLI6_SAME_64)).unwrap(),
        "unban by any address of the /64"
    );
    lab.assert_connects(CLI6_SAME_64, SRV6, PROTECTED, "unbanned");
}

#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn pinned_shield_outlives_its_loader_and_opens_for_a_cli() {
    let lab = Lab::new("pin");
    let pins = PinDir(PathBuf::from(format!(
        "/sys/fs/bpf/smtp-edge-test-{}",
        std::process::id()
    )));
    let dir = pins.0.clone();
    let cfg = ShieldConfig {
        enabled: true,
        interfaces: vec!["veth-srv".into()],
        ports: vec![PROTECTED],
        syn_rate: 1000,
        syn_burst: 1000,
        pin: true,
        ..ShieldConfig::default()
    };
    let load_dir = dir.clone();
    let load_cfg = cfg.clone();
    let shield = match in_netns(&lab.srv, move || Shield::load_at(&load_cfg, &load_dir)) {
        Ok(s) => s,
        Err(e) => panic!("Shield::load_at(pin): {e}"),
    };
    let _listener = lab.listen(PROTECTED);
    shield.ban(ip(CLI4), Duration::from_secs(600)).unwrap();
    drop(shield);

    // The loader is gone; the pinned link keeps the program attached.
    lab.assert_dropped(CLI4, SRV4, PROTECTED, "banned by a shield that has exited");
    let cli = Shield::open_pinned_at(&dir).expect("open pinned maps");
    assert_eq!(cli.bans_active().unwrap(), 1);
    assert!(cli.counters().unwrap().dropped_banned >= 1);

    // A restart replaces the program on the pinned link and keeps the bans.
    let load_dir = dir.clone();
    let again = in_netns(&lab.srv, move || Shield::load_at(&cfg, &load_dir)).expect("reload");
    assert_eq!(
        again.attachments(),
        &[("veth-srv".to_string(), AttachMode::ReplacedPinned)]
    );
    assert_eq!(again.bans_active().unwrap(), 1, "bans survive a restart");
    drop(again);
    lab.assert_dropped(CLI4, SRV4, PROTECTED, "still banned after the restart");

    assert!(cli.unban(ip(CLI4)).unwrap());
    lab.assert_connects(CLI4, SRV4, PROTECTED, "unbanned through the pinned map");
    drop(cli);
    Shield::remove_pinned_at(&dir).unwrap();
    assert!(!dir.exists());
}

#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn generic_mode_is_the_fallback_and_still_drops() {
    // Loopback has no native XDP: loading on it must fall back to generic (SKB) mode, per
    // interface, and the program must still enforce bans there.
    let lab = Lab::new("generic");
    let cfg = ShieldConfig {
        enabled: true,
        interfaces: vec!["lo".into()],
        ports: vec![PROTECTED],
        syn_rate: 1000,
        syn_burst: 1000,
        ..ShieldConfig::default()
    };
    let srv = lab.srv.clone();
    let shield = match in_netns(&srv, move || Shield::load(&cfg)) {
        Ok(shield) => shield,
        Err(e) => panic!("Shield::load on lo: {e}"),
    };
    assert_eq!(
        shield.attachments(),
        &[("lo".to_owned(), AttachMode::Generic)][..],
        "loopback must fall back to generic mode"
    );
    let connect = |timeout: Duration| {
        in_netns(&srv, move || {
            let l = TcpListener::bind(("127.0.0.1", PROTECTED))?;
            let r = std::net::TcpStream::connect_timeout(
                &SocketAddr::new(ip("127.0.0.1"), PROTECTED),
                timeout,
            );
            drop(l);
            r.map(drop)
        })
    };
    connect(Duration::from_secs(2)).expect("not banned: connects over lo");
    shield
        .ban(ip("127.0.0.1"), Duration::from_secs(60))
        .unwrap();
    assert!(
        connect(Duration::from_millis(1500)).is_err(),
        "banned: the SYN is dropped in generic mode"
    );
    assert!(shield.counters().unwrap().dropped_banned > 0);
}

/// The server sweeps the kernel's ban map on its guard thread, never on a ring: one pass visits
/// every entry in bounded steps (a pause between them), deletes the expired ones and reports
/// the ones in force.
#[test]
#[ignore = "needs root: network namespaces, a veth pair and an XDP program"]
fn ban_map_sweep_deletes_expired_entries_in_bounded_steps() {
    let lab = Lab::new("sweep");
    let shield = lab.shield(ShieldConfig::default());
    const EXPIRED: u32 = 20_000;
    const LIVE: u32 = 100;
    const STEP: usize = 1024;
    for i in 0..EXPIRED + LIVE {
        let ip = IpAddr::V4(std::net::Ipv4Addr::from(0x0a40_0000 + i));
        let dur = if i < EXPIRED {
            Duration::ZERO
        } else {
            Duration::from_secs(600)
        };
        shield.ban(ip, dur).unwrap();
    }
    let mut sweeper = shield.sweeper().unwrap();
    let mut pauses = 0usize;
    let sweep = sweeper.sweep(STEP, || pauses += 1).unwrap();
    assert_eq!(sweep.removed, EXPIRED as usize);
    assert_eq!(sweep.live.len(), LIVE as usize);
    // A pause after every STEP entries visited, then after every STEP deleted.
    let steps = (EXPIRED + LIVE) as usize / STEP + EXPIRED as usize / STEP;
    assert!(
        pauses >= steps,
        "{pauses} pauses; a walk of {} entries and {EXPIRED} deletions in steps of {STEP}",
        EXPIRED + LIVE
    );
    assert_eq!(shield.bans_active().unwrap(), LIVE as usize);
    assert_eq!(sweeper.sweep(STEP, || {}).unwrap().removed, 0);
}
