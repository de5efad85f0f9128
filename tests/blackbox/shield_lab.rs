//! The network lab of the shield black-box tests: two namespaces joined by a veth pair, with
//! fixed addresses, and helpers to run code inside either namespace.
//!
//! [`Lab::new`] makes `se-srv-<pid>-<tag>` and `se-cli-<pid>-<tag>` (removed on drop, with the
//! veth pair and its VLAN). Nothing leaves those namespaces. The tests that use it are
//! `#[ignore = "needs root: ..."]` and, when run, fail naming what is missing (root, `ip`, BPF).

use std::fs::File;
use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread;
use std::time::Duration;

use smtp_edge::shield::{Shield, ShieldConfig};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// The protected port, and one that is not.
pub(crate) const PROTECTED: u16 = 2525;
pub(crate) const UNPROTECTED: u16 = 2600;
/// How long a connect may wait before we call its SYN dropped. A passing handshake on a veth
/// takes well under a millisecond; a dropped SYN is retransmitted only after 1 s.
pub(crate) const DROPPED: Duration = Duration::from_millis(700);

pub(crate) const SRV4: &str = "10.77.0.1";
pub(crate) const CLI4: &str = "10.77.0.2";
pub(crate) const CLI4_ALLOWED: &str = "10.77.0.3";
pub(crate) const CLI4_SPARE: &str = "10.77.0.4";
pub(crate) const SRV6: &str = "fd00:77::1";
pub(crate) const CLI6: &str = "fd00:77::2";
pub(crate) const CLI6_SAME_64: &str = "fd00:77::3";
/// Over 802.1Q VLAN 10 on the same veth.
pub(crate) const SRV_VLAN: &str = "10.78.0.1";
pub(crate) const CLI_VLAN: &str = "10.78.0.2";

/// Removes a test pin directory on drop, even when the test fails.
pub(crate) struct PinDir(pub(crate) PathBuf);

impl Drop for PinDir {
    fn drop(&mut self) {
        let _ = Shield::remove_pinned_at(&self.0);
    }
}

pub(crate) fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Fails the test, naming the tool to install, when `cmd` is not on the PATH.
pub(crate) fn require(cmd: &str, package: &str) {
    assert!(
        have(cmd),
        "`{cmd}` not found (apt-get install {package}, or run `cargo xtask test`)"
    );
}

pub(crate) fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Two namespaces and a veth pair (plus VLAN 10 over it), removed on drop.
pub(crate) struct Lab {
    pub(crate) srv: String,
    pub(crate) cli: String,
    /// Whether VLAN 10 exists (the kernel may lack 802.1Q support).
    pub(crate) vlan: bool,
}

impl Lab {
    /// Fails the test when not root or without `ip`: those tests are ignored unless asked for.
    pub(crate) fn new(tag: &str) -> Lab {
        // SAFETY: geteuid has no preconditions.
        let euid = unsafe { libc::geteuid() };
        assert_eq!(euid, 0, "network namespaces and BPF need root");
        require("ip", "iproute2");
        let pid = std::process::id();
        // Built before any command so that Drop removes whatever a failure leaves behind.
        let mut lab = Lab {
            srv: format!("se-srv-{pid}-{tag}"),
            cli: format!("se-cli-{pid}-{tag}"),
            vlan: true,
        };
        lab.ip(&["netns", "add", &lab.srv]);
        lab.ip(&["netns", "add", &lab.cli]);
        lab.ip(&[
            "link", "add", "veth-srv", "netns", &lab.srv, "type", "veth", "peer", "name",
            "veth-cli", "netns", &lab.cli,
        ]);
        for (ns, dev, v4s, v6s, vlan) in [
            (&lab.srv, "veth-srv", &[SRV4][..], &[SRV6][..], SRV_VLAN),
            (
                &lab.cli,
                "veth-cli",
                &[CLI4, CLI4_ALLOWED, CLI4_SPARE][..],
                &[CLI6, CLI6_SAME_64][..],
                CLI_VLAN,
            ),
        ] {
            lab.ip(&["-n", ns, "link", "set", "lo", "up"]);
            lab.ip(&["-n", ns, "link", "set", dev, "up"]);
            for a in v4s {
                lab.ip(&["-n", ns, "addr", "add", &format!("{a}/24"), "dev", dev]);
            }
            for a in v6s {
                // nodad: usable at once, no duplicate address detection wait.
                lab.ip(&[
                    "-n",
                    ns,
                    "addr",
                    "add",
                    &format!("{a}/64"),
                    "dev",
                    dev,
                    "nodad",
                ]);
            }
            let vdev = format!("{dev}.10");
            lab.vlan = lab.vlan
                && Command::new("ip")
                    .args(["-n", ns, "link", "add", "link", dev, "name", &vdev])
                    .args(["type", "vlan", "id", "10"])
                    .stderr(Stdio::null())
                    .status()
                    .is_ok_and(|s| s.success());
            if lab.vlan {
                lab.ip(&["-n", ns, "link", "set", &vdev, "up"]);
                lab.ip(&["-n", ns, "addr", "add", &format!("{vlan}/24"), "dev", &vdev]);
            }
        }
        if !lab.vlan {
            eprintln!("no 802.1Q support in this kernel: VLAN cases not run");
        }
        lab
    }

    pub(crate) fn ip(&self, args: &[&str]) {
        let out = Command::new("ip").args(args).output().expect("run ip");
        assert!(
            out.status.success(),
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The shield on the server's veth, loaded from inside the server namespace.
    pub(crate) fn shield(&self, cfg: ShieldConfig) -> Shield {
        let cfg = ShieldConfig {
            enabled: true,
            interfaces: vec!["veth-srv".into()],
            ports: vec![PROTECTED],
            ..cfg
        };
        match in_netns(&self.srv, move || Shield::load(&cfg)) {
            Ok(shield) => {
                assert_eq!(shield.attachments().len(), 1);
                eprintln!("shield attached: {:?}", shield.attachments());
                shield
            }
            Err(e) => panic!("Shield::load: {e}"),
        }
    }

    /// A listener on `[::]:port` in the server namespace (IPv4 arrives IPv4-mapped).
    pub(crate) fn listen(&self, port: u16) -> TcpListener {
        let l = in_netns(&self.srv, move || TcpListener::bind(("::", port))).expect("bind");
        l.set_nonblocking(true).unwrap();
        l
    }

    /// Connects from `src` (an address of the client namespace) to `dst`.
    pub(crate) fn connect(
        &self,
        src: &str,
        dst: &str,
        port: u16,
        timeout: Duration,
    ) -> io::Result<()> {
        let (src, dst) = (ip(src), SocketAddr::new(ip(dst), port));
        in_netns(&self.cli, move || {
            let s = Socket::new(Domain::for_address(dst), Type::STREAM, Some(Protocol::TCP))?;
            s.bind(&SockAddr::from(SocketAddr::new(src, 0)))?;
            s.connect_timeout(&SockAddr::from(dst), timeout)
        })
    }

    /// Asserts that `src` can connect to `dst:port` now.
    pub(crate) fn assert_connects(&self, src: &str, dst: &str, port: u16, why: &str) {
        if let Err(e) = self.connect(src, dst, port, Duration::from_secs(5)) {
            panic!("{src} -> {dst}:{port} should connect ({why}): {e}");
        }
    }

    /// Asserts that `src`'s SYN to `dst:port` goes unanswered (dropped by the shield).
    pub(crate) fn assert_dropped(&self, src: &str, dst: &str, port: u16, why: &str) {
        match self.connect(src, dst, port, DROPPED) {
            Err(e) if e.kind() == io::ErrorKind::TimedOut => {}
            other => panic!("{src} -> {dst}:{port} should time out ({why}), got {other:?}"),
        }
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace destroys its end of the veth and with it the other end.
        for ns in [&self.cli, &self.srv] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Runs `f` on a thread that has entered network namespace `ns` (setns affects that thread
/// only); sockets made there stay in `ns` wherever they are used later.
pub(crate) fn in_netns<T: Send + 'static>(ns: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let path = format!("/run/netns/{ns}");
    thread::spawn(move || {
        let file = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
        // SAFETY: a valid namespace fd, and CLONE_NEWNET only changes this thread.
        let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(rc, 0, "setns {path}: {}", io::Error::last_os_error());
        f()
    })
    .join()
    .unwrap_or_else(|e| std::panic::resume_unwind(e))
}
