//! `smtp-edge ban list|add|del`: a running server's bans, changed through its control socket,
//! without the XDP shield and without a restart.

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use crate::harness::{run_client, Opts, Server, BIN, READY_DEADLINE};
use crate::session::SmtpConn;

/// A loopback address outside `127.0.0.1/32`: another host, as far as the server can tell.
const OTHER_HOST: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2));

/// Runs `smtp-edge ban <args> --config <server's config>`.
fn ban(server: &Server, args: &[&str]) -> Output {
    let config = server.config.as_ref().expect("a config file");
    ban_with(config, args)
}

fn ban_with(config: &Path, args: &[&str]) -> Output {
    let config = config.display().to_string();
    let mut all = vec!["ban"];
    all.extend_from_slice(args);
    all.extend_from_slice(&["--config", &config]);
    run_client(BIN, &all, b"", READY_DEADLINE)
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The first reply on a new connection from `source`.
fn first_reply(source: IpAddr, server: &Server) -> String {
    let mut c = SmtpConn::connect_from(source, server.delivery()).expect("connect");
    c.reply().status()
}

#[test]
fn a_userspace_ban_is_listed_and_lifted_without_a_restart() {
    let server = Server::start(Opts {
        workers: 1,
        max_bad_commands: 2,
        ban_secs: Some(3600),
        trusted: Some(vec![]),
        ..Opts::default()
    });
    let mut c = SmtpConn::connect(server.delivery());
    assert_eq!(c.cmd("FOO").code, 500);
    assert_eq!(c.cmd("BAR").code, 421);
    c.expect_closed(Duration::from_secs(10));
    assert_eq!(
        first_reply(Ipv4Addr::LOCALHOST.into(), &server),
        "421 4.7.0"
    );

    let list = ban(&server, &["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let lines: Vec<String> = stdout(&list).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (source, secs) = lines[0].split_once(' ').expect("prefix secs");
    assert_eq!(source, "127.0.0.1/32");
    let secs: u64 = secs.parse().expect("seconds");
    assert!((3500..=3600).contains(&secs), "{secs}");

    let del = ban(&server, &["del", "127.0.0.1"]);
    assert!(del.status.success(), "{}", stderr(&del));
    assert_eq!(stdout(&del).trim(), "unbanned 127.0.0.1/32");
    SmtpConn::connect(server.delivery());
    assert_eq!(stdout(&ban(&server, &["list"])), "");
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 0.0);

    let again = ban(&server, &["del", "127.0.0.1"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(
        stderr(&again).contains("127.0.0.1/32 is not banned"),
        "{}",
        stderr(&again)
    );
}

#[test]
fn ban_add_refuses_a_source_until_it_is_deleted_but_never_a_trusted_one() {
    let server = Server::start(Opts {
        workers: 1,
        trusted: Some(vec!["127.0.0.1/32"]),
        ..Opts::default()
    });
    let add = ban(&server, &["add", "127.0.0.2", "--secs", "600"]);
    assert!(add.status.success(), "{}", stderr(&add));
    assert_eq!(stdout(&add).trim(), "banned 127.0.0.2/32 for 600s");
    assert_eq!(first_reply(OTHER_HOST, &server), "421 4.7.0");
    assert_eq!(server.metric("smtp_edge_shield_bans_active"), 1.0);
    // A trusted source: the server refuses to ban it.
    let local = ban(&server, &["add", "127.0.0.1"]);
    assert_eq!(local.status.code(), Some(1), "{}", stdout(&local));
    assert!(
        stderr(&local).contains("guard.trusted"),
        "{}",
        stderr(&local)
    );
    SmtpConn::connect(server.delivery());

    assert!(ban(&server, &["del", "127.0.0.2/32"]).status.success());
    assert_eq!(first_reply(OTHER_HOST, &server), "220");
}

#[test]
fn the_control_socket_is_private_and_goes_with_the_server() {
    let mut server = Server::start(Opts::default());
    let socket = server.dir.path().join("spool/control.sock");
    let meta = std::fs::symlink_metadata(&socket).expect("control socket in the spool");
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);

    server.signal(libc::SIGTERM);
    assert!(server.wait(Duration::from_secs(30)).success());
    assert!(!socket.exists(), "socket left behind after a clean stop");
    let config = server.config.clone().expect("config");
    let out = ban_with(&config, &["list"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no server is running"),
        "{}",
        stderr(&out)
    );
    // A crash leaves the socket file; the next start replaces it.
    server.restart();
    server.sigkill();
    assert!(socket.exists());
    server.restart();
    assert!(ban_with(&config, &["list"]).status.success());
}
