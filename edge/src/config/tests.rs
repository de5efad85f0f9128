//! Config tests: each bad value must be blamed on its exact key.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use super::*;
use crate::logging::LogFormat;
use crate::shield::ShieldConfig;
use crate::tls::{CertEntry, CertSource, TlsConfig};

/// A minimal valid file; tests append to it or replace a line of it.
const BASE: &str = r#"
hostname = "mx.example.test"
local_domains = ["Example.TEST"]

[[listener]]
addr = "127.0.0.1:2525"
role = "delivery"

[spool]
dir = "/var/spool/smtp-edge"

[delivery]
maildir = "/var/mail/smtp-edge"
"#;

fn errors(text: &str) -> Vec<ConfigError> {
    match Config::from_toml_str(text) {
        Ok(c) => panic!("expected errors, got {c:?}\n--- input ---\n{text}"),
        Err(ConfigErrors(errors)) => errors,
    }
}

fn keys(text: &str) -> Vec<String> {
    errors(text).into_iter().map(|e| e.key).collect()
}

/// BASE with `from` replaced by `to` (which must occur).
fn edit(from: &str, to: &str) -> String {
    assert!(BASE.contains(from), "{from:?} not in BASE");
    BASE.replacen(from, to, 1)
}

#[test]
fn base_is_valid_and_typed() {
    let c = Config::from_toml_str(BASE).unwrap();
    assert_eq!(c.hostname, "mx.example.test");
    assert_eq!(c.local_domains, ["example.test"]);
    assert_eq!(c.workers, 0);
    assert!(c.worker_count() >= 1);
    assert_eq!(
        c.listeners,
        [ListenerConfig {
            addr: "127.0.0.1:2525".parse().unwrap(),
            role: Role::Delivery,
            tls: TlsMode::None,
            require_tls: false,
            greet_delay: Duration::ZERO,
            proxy_protocol: false,
            name: None,
        }]
    );
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.limits.max_connections_per_ip, 50);
    assert_eq!(
        c.shield,
        ShieldConfig {
            ports: vec![2525],
            ..ShieldConfig::default()
        },
        "disabled, guarding the delivery port"
    );
    assert_eq!(c.metrics_addr, None);
    assert_eq!(c.recipients, None);
    assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        c.tls,
        TlsConfig::self_signed(cwd.join("var/tls"), "mx.example.test")
    );
}

/// One row per mistake: (what to append or edit, the one key that must be blamed).
#[test]
fn each_bad_value_names_its_key() {
    let appended: &[(&str, &str)] = &[
        ("workers = -1", "workers"),
        ("workers = 5000", "workers"),
        ("workers = \"four\"", "workers"),
        ("wrokers = 4", "wrokers"),
        (
            "[[listener]]\naddr = \"x\"\nrole = \"delivery\"",
            "listener[1].addr",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:2525\"\nrole = \"submission\"",
            "listener[1].addr",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"relay\"",
            "listener[1].role",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nrequire_tls = true",
            "listener[1].require_tls",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"submission\"\ntls = \"implicit\"\nrequire_tls = false",
            "listener[1].require_tls",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nrequire_tls = \"yes\"",
            "listener[1].require_tls",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nname = \"\"",
            "listener[1].name",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nname = \"m x\"",
            "listener[1].name",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nname = \"a\\\"b\"",
            "listener[1].name",
        ),
        ("[log]\nformat = \"xml\"", "log.format"),
        ("[log]\nlevel = \"debug\"", "log.level"),
        ("log = \"json\"", "log"),
        ("[tls]\ncert = \"/nonexistent/cert.pem\"", "tls.key"),
        ("[tls]\nkey = \"/nonexistent/key.pem\"", "tls.cert"),
        ("[tls]\ncrt = \"/x\"", "tls.crt"),
        ("[tls]\nsession_cache = -1", "tls.session_cache"),
        ("[tls]\nsession_cache = 2000000", "tls.session_cache"),
        ("[tls]\nhandshake_timeout_secs = 0", "tls.handshake_timeout_secs"),
        ("[tls]\nhandshake_timeout_secs = 301", "tls.handshake_timeout_secs"),
        ("[tls]\nself_signed_dir = \"\"", "tls.self_signed_dir"),
        (
            "[[tls.certificate]]\ncert = \"/x\"\nkey = \"/y\"\nextra = 1",
            "tls.certificate[0].extra",
        ),
        ("[tls]\ncertificate = 3", "tls.certificate"),
        ("[[tls.certificate]]\ncert = \"/x\"", "tls.certificate[0].key"),
        ("tls = 3", "tls"),
        ("auth = 3", "auth"),
        ("[auth]\nmax_failures = 0", "auth.max_failures"),
        ("[auth]\nmax_failures = 1001", "auth.max_failures"),
        ("[auth]\nfailure_window_secs = 0", "auth.failure_window_secs"),
        ("[auth]\nban_secs = -5", "auth.ban_secs"),
        ("[auth]\nban_secs = 604801", "auth.ban_secs"),
        ("[auth]\ntarpit_max_ms = 60001", "auth.tarpit_max_ms"),
        ("[auth]\nverify_threads = 0", "auth.verify_threads"),
        ("[auth]\nverify_threads = 17", "auth.verify_threads"),
        ("[auth]\nmax_checks_per_source = 0", "auth.max_checks_per_source"),
        ("[auth]\nmax_checks_per_source = 17", "auth.max_checks_per_source"),
        ("[auth]\ntrace_login = \"yes\"", "auth.trace_login"),
        ("[auth]\nuser = \"/x\"", "auth.user"),
        ("[auth]\nusers = \"\"", "auth.users"),
        ("[auth]\nusers = \"/nonexistent/users\"", "auth.users"),
        ("[auth]\naliases = \"/x\"", "auth.aliases"),
        (
            "[auth]\nsubmission_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\"]",
            "auth.submission_networks[1]",
        ),
        ("[auth]\nsubmission_networks = \"10.0.0.0/8\"", "auth.submission_networks"),
        ("[guard]\ntrusted = [\"127.0.0.0/8\", \"nope\"]", "guard.trusted[1]"),
        ("[guard]\ntrusted = \"127.0.0.0/8\"", "guard.trusted"),
        ("[limits]\nmax_connections = 0", "limits.max_connections"),
        ("[limits]\nmax_connections = 10000001", "limits.max_connections"),
        ("[guard]\ntrustd = []", "guard.trustd"),
        ("[proxy]\ntrusted = [\"10.0.0.0/8\", \"x\"]", "proxy.trusted[1]"),
        ("[proxy]\ntrusted = \"10.0.0.0/8\"", "proxy.trusted"),
        ("[proxy]\nheader_timeout_secs = 0", "proxy.header_timeout_secs"),
        ("[proxy]\nheader_timeout_secs = 61", "proxy.header_timeout_secs"),
        ("[proxy]\ntrust = []", "proxy.trust"),
        ("[control]\nsocket = \"\"", "control.socket"),
        ("[control]\npath = \"/x\"", "control.path"),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\ntls = \"ssl\"",
            "listener[1].tls",
        ),
        (
            "[[listener]]\nadr = \"127.0.0.1:1\"\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"",
            "listener[1].adr",
        ),
        ("[[listener]]\nrole = \"delivery\"", "listener[1].addr"),
        ("[limits]\nmax_recipients = 20", "limits.max_recipients"),
        ("[limits]\nmax_recipients = 10001", "limits.max_recipients"),
        (
            "[limits]\nmax_message_size = 1000",
            "limits.max_message_size",
        ),
        ("[limits]\nmax_message_size = -5", "limits.max_message_size"),
        ("[limits]\nmax_bad_commands = 0", "limits.max_bad_commands"),
        (
            "[limits]\ncommand_timeout_secs = 0",
            "limits.command_timeout_secs",
        ),
        (
            "[limits]\ndata_timeout_secs = 0",
            "limits.data_timeout_secs",
        ),
        (
            "[limits]\ndata_timeout_secs = \"3m\"",
            "limits.data_timeout_secs",
        ),
        ("[limits]\nmax_recipient = 200", "limits.max_recipient"),
        ("[metrics]\naddr = \"localhost:9125\"", "metrics.addr"),
        ("[metrics]\nport = 9125", "metrics.port"),
        ("[shutdown]\ngrace_secs = -1", "shutdown.grace_secs"),
        ("limits = 3", "limits"),
        (
            "[limits]\nmax_connections_per_ip = -1",
            "limits.max_connections_per_ip",
        ),
        (
            "[limits]\nmax_connections_per_ip = 100001",
            "limits.max_connections_per_ip",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\ngreet_delay_ms = 30001",
            "listener[1].greet_delay_ms",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\ngreet_delay_ms = -1",
            "listener[1].greet_delay_ms",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\ngreet_delay_ms = \"1s\"",
            "listener[1].greet_delay_ms",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"submission\"\ntls = \"implicit\"\ngreet_delay_ms = 300",
            "listener[1].greet_delay_ms",
        ),
        ("shield = 3", "shield"),
        ("[shield]\nenable = true", "shield.enable"),
        ("[shield]\nenabled = \"yes\"", "shield.enabled"),
        ("[shield]\nrequired = true", "shield.required"),
        ("[shield]\nenabled = true", "shield.interfaces"),
        (
            "[shield]\nenabled = true\ninterfaces = [\"smtp-edge-no0\"]",
            "shield.interfaces[0]",
        ),
        (
            "[shield]\ninterfaces = [\"lo\", \"lo\"]",
            "shield.interfaces[1]",
        ),
        ("[shield]\nports = []", "shield.ports"),
        ("[shield]\nports = [25, 25]", "shield.ports[1]"),
        ("[shield]\nports = [0]", "shield.ports[0]"),
        ("[shield]\nallow = [\"10.0.0.0/33\"]", "shield.allow[0]"),
        ("[shield]\nsyn_rate = 0", "shield.syn_rate"),
        ("[shield]\nsyn_burst = 1000001", "shield.syn_burst"),
        (
            "[shield]\npressure_syn_rate = 1000001",
            "shield.pressure_syn_rate",
        ),
        ("[shield]\nmax_sources = 1", "shield.max_sources"),
        ("[shield]\nban_secs = 0", "shield.ban_secs"),
    ];
    // Appended tables must come after BASE's; top-level keys must come before them.
    for (extra, key) in appended {
        let text = if extra.starts_with('[') {
            format!("{BASE}\n{extra}\n")
        } else {
            format!("{extra}\n{BASE}")
        };
        assert_eq!(keys(&text), [*key], "input:\n{text}");
    }
    let edited: &[(&str, &str, &str)] = &[
        ("hostname = \"mx.example.test\"", "", "hostname"),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"mx example\"",
            "hostname",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"[192.0.2.1]\"",
            "hostname",
        ),
        (
            "hostname = \"mx.example.test\"",
            "hostname = \"-mx.example.test\"",
            "hostname",
        ),
        ("local_domains = [\"Example.TEST\"]", "", "local_domains"),
        (
            "local_domains = [\"Example.TEST\"]",
            "local_domains = []",
            "local_domains",
        ),
        (
            "local_domains = [\"Example.TEST\"]",
            "local_domains = [\"a.test\", \"b..test\"]",
            "local_domains[1]",
        ),
        (
            "[[listener]]\naddr = \"127.0.0.1:2525\"\nrole = \"delivery\"\n",
            "",
            "listener",
        ),
        ("dir = \"/var/spool/smtp-edge\"", "dir = \"\"", "spool.dir"),
        ("[spool]\ndir = \"/var/spool/smtp-edge\"\n", "", "spool.dir"),
        (
            "[spool]\ndir = \"/var/spool/smtp-edge\"\n",
            "[spool]\n",
            "spool.dir",
        ),
        (
            "[delivery]\nmaildir = \"/var/mail/smtp-edge\"\n",
            "",
            "delivery.maildir",
        ),
    ];
    for (from, to, key) in edited {
        let text = edit(from, to);
        assert_eq!(keys(&text), [*key], "input:\n{text}");
    }
    let listener_not_array = format!(
        "listener = 3\n{}",
        edit(
            "[[listener]]\naddr = \"127.0.0.1:2525\"\nrole = \"delivery\"\n",
            ""
        )
    );
    assert_eq!(keys(&listener_not_array), ["listener"]);
}

#[test]
fn messages_read_as_key_colon_problem() {
    let text = format!("{BASE}\n[[listener]]\naddr = \"x\"\nrole = \"delivery\"\n");
    let e = errors(&text);
    assert!(
        e[0].to_string()
            .starts_with("listener[1].addr: invalid socket address \"x\""),
        "{}",
        e[0]
    );
    let e = errors(&format!("{BASE}\n[limits]\nmax_recipients = 20\n"));
    assert_eq!(
        e[0].to_string(),
        "limits.max_recipients: must be 100..=10000 (RFC 5321 §4.5.3.1.8 requires at least 100), got 20"
    );
    let e = errors(&format!(
        "{BASE}\n[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nrequire_tls = true\n"
    ));
    assert!(
        e[0].to_string()
            .starts_with("listener[1].require_tls: cannot be true with tls = \"none\""),
        "{}",
        e[0]
    );
    let e = errors(&format!("{BASE}\n[tls]\ncert = \"/nonexistent/c.pem\"\n"));
    assert!(
        e[0].to_string()
            .starts_with("tls.key: required when tls.cert is set"),
        "{}",
        e[0]
    );
    let e = errors(&format!("limits = 3\n{BASE}"));
    assert_eq!(
        e[0].to_string(),
        "limits: invalid type: integer `3`, expected a table"
    );
    let e = errors(&format!("{BASE}\n[limits]\nmax_recipent = 200\n"));
    assert!(e[0].problem.starts_with("unknown key"), "{}", e[0]);
    assert!(
        e[0].problem.contains("max_recipients"),
        "the valid keys are listed: {}",
        e[0]
    );
}

#[test]
fn every_problem_is_reported_not_just_the_first() {
    let text = format!(
        "{}\n[limits]\nmax_recipients = 20\n\n[[listener]]\naddr = \"nowhere\"\nrole = \"delivery\"\n",
        edit("hostname = \"mx.example.test\"", "hostname = \"bad host\"")
    );
    let e = errors(&text);
    let mut got: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    got.sort();
    assert_eq!(
        got,
        ["hostname", "limits.max_recipients", "listener[1].addr"]
    );
    // Display: one problem per line.
    assert_eq!(ConfigErrors(e).to_string().lines().count(), 3);
}

#[test]
fn serde_errors_in_different_sections_are_all_reported() {
    let text = format!(
        "{BASE}\n[limits]\nmax_recipients = \"many\"\n[metrics]\naddr = 9125\n[[listener]]\nrole = \"delivery\"\n"
    );
    let mut got = keys(&text);
    got.sort();
    assert_eq!(
        got,
        ["limits.max_recipients", "listener[1].addr", "metrics.addr"]
    );
}

#[test]
fn syntax_errors_name_the_file_and_line() {
    let text = format!("{BASE}\n[limits\nmax_recipients = 100\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, FILE_KEY);
    let line = text.lines().position(|l| l == "[limits").unwrap() + 1;
    assert!(
        e[0].problem.starts_with(&format!("line {line}, column ")),
        "{}",
        e[0]
    );
    assert!(e[0].problem.ends_with("(in `[limits`)"), "{}", e[0]);
    // The key of a malformed line shows up in the quoted source.
    let e = errors(&format!("workers = = 2\n{BASE}"));
    assert!(e[0].problem.starts_with("line 1, column "), "{}", e[0]);
    assert!(e[0].problem.contains("workers = = 2"), "{}", e[0]);
    assert!(!e[0].to_string().contains('\n'), "one line: {}", e[0]);
}

#[test]
fn duplicate_listener_addresses_but_port_zero_may_repeat() {
    let twice = "[[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"delivery\"\n";
    let c = Config::from_toml_str(&format!("{BASE}\n{twice}\n{twice}")).unwrap();
    assert_eq!(c.listeners.len(), 3);
}

#[test]
fn listener_names_are_optional_and_unique() {
    let c = Config::from_toml_str(&edit(
        "role = \"delivery\"\n",
        "role = \"delivery\"\nname = \"mx-1.public_v4\"\n",
    ))
    .unwrap();
    assert_eq!(c.listeners[0].name.as_deref(), Some("mx-1.public_v4"));
    assert_eq!(Config::from_toml_str(BASE).unwrap().listeners[0].name, None);

    let named = |addr: &str| {
        format!("[[listener]]\naddr = \"{addr}\"\nrole = \"delivery\"\nname = \"mx\"\n")
    };
    let text = format!("{BASE}\n{}\n{}", named("127.0.0.1:1"), named("127.0.0.1:2"));
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "listener[2].name");
    assert!(e[0].problem.contains("listener[1]"), "{}", e[0].problem);
    let long = format!(
        "{BASE}\n[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"delivery\"\nname = \"{}\"",
        "a".repeat(65)
    );
    assert_eq!(keys(&long), ["listener[1].name"]);
}

#[test]
fn log_format_is_text_unless_json() {
    assert_eq!(
        Config::from_toml_str(BASE).unwrap().log.format,
        LogFormat::Text
    );
    let json = Config::from_toml_str(&format!("{BASE}\n[log]\nformat = \"json\"")).unwrap();
    assert_eq!(json.log.format, LogFormat::Json);
    let text = Config::from_toml_str(&format!("{BASE}\n[log]\nformat = \"text\"")).unwrap();
    assert_eq!(text.log.format, LogFormat::Text);
    let e = errors(&format!("{BASE}\n[log]\nformat = \"xml\""));
    assert!(e[0].to_string().starts_with("log.format: "), "{e:?}");
    assert!(
        e[0].problem.contains("text") && e[0].problem.contains("json"),
        "{e:?}"
    );
}

#[test]
fn embedded_default_parses() {
    let c = Config::embedded_default();
    assert_eq!(c.hostname, "localhost");
    assert_eq!(c.local_domains, ["localhost", "example.test"]);
    let addrs: Vec<(SocketAddr, Role, TlsMode, bool)> = c
        .listeners
        .iter()
        .map(|l| (l.addr, l.role, l.tls, l.require_tls))
        .collect();
    assert_eq!(
        addrs,
        [
            (
                "127.0.0.1:2525".parse().unwrap(),
                Role::Delivery,
                TlsMode::StartTls,
                false
            ),
            (
                "127.0.0.1:2587".parse().unwrap(),
                Role::Submission,
                TlsMode::StartTls,
                true
            ),
            (
                "127.0.0.1:2465".parse().unwrap(),
                Role::Submission,
                TlsMode::Implicit,
                true
            ),
        ]
    );
    let cwd = std::env::current_dir().unwrap();
    assert_eq!(
        c.spool_dir,
        std::path::absolute(cwd.join("var/spool")).unwrap()
    );
    assert!(c.spool_dir.is_absolute() && c.maildir.is_absolute());
    assert!(c.maildir.ends_with("var/mail"));
    assert_eq!(c.metrics_addr, Some("127.0.0.1:9125".parse().unwrap()));
    assert_eq!(c.limits, Limits::default());
    assert_eq!(c.recipients, None);
    assert_eq!(
        c.tls,
        TlsConfig::self_signed(cwd.join("var/tls"), "localhost")
    );
    assert_eq!(c.auth, AuthConfig::default());
    assert!(c.listeners.iter().all(|l| l.greet_delay.is_zero()));
    assert!(!c.shield.enabled, "the shield is off by default");
    assert_eq!(c.shield.ports, [2525], "the delivery listener's port");
    assert_eq!(c.guard, crate::guard::GuardConfig::default());
    assert_eq!(c.control.socket, cwd.join("var/control.sock"));
}

#[test]
fn guard_trusts_loopback_unless_told_otherwise() {
    let c = Config::from_toml_str(BASE).unwrap();
    for ip in ["127.0.0.1", "127.9.9.9", "::1", "::ffff:127.0.0.1"] {
        assert!(c.guard.is_trusted(ip.parse().unwrap()), "{ip}");
    }
    assert!(!c.guard.is_trusted("192.0.2.1".parse().unwrap()));
    let c = Config::from_toml_str(&format!(
        "{BASE}\n[guard]\ntrusted = [\"192.0.2.0/24\", \"2001:db8::1\"]\n"
    ))
    .unwrap();
    assert!(c.guard.is_trusted("192.0.2.77".parse().unwrap()));
    assert!(c.guard.is_trusted("2001:db8::1".parse().unwrap()));
    assert!(!c.guard.is_trusted("2001:db8::2".parse().unwrap()));
    assert!(!c.guard.is_trusted("127.0.0.1".parse().unwrap()));
    let c = Config::from_toml_str(&format!("{BASE}\n[guard]\ntrusted = []\n")).unwrap();
    assert!(c.guard.trusted.is_empty());
}

#[test]
fn proxy_protocol_is_off_and_no_balancer_is_trusted_by_default() {
    let c = Config::from_toml_str(BASE).unwrap();
    assert!(!c.listeners[0].proxy_protocol);
    assert_eq!(c.proxy, crate::proxy::ProxyConfig::default());
    assert_eq!(c.proxy.header_timeout, Duration::from_secs(5));
    assert!(c.guard.balancers.is_empty());
}

#[test]
fn a_proxy_listener_trusts_only_proxy_trusted_and_its_balancers_are_never_banned_nor_limited() {
    let text = edit(
        "role = \"delivery\"",
        "role = \"delivery\"\nproxy_protocol = true",
    );
    let text = format!(
        "{text}\n[proxy]\ntrusted = [\"10.1.0.0/24\", \"2001:db8::10\"]\nheader_timeout_secs = 3\n\
         [shield]\nallow = [\"192.0.2.0/24\"]\n"
    );
    let c = Config::from_toml_str(&text).unwrap();
    assert!(c.listeners[0].proxy_protocol);
    assert_eq!(c.proxy.header_timeout, Duration::from_secs(3));
    assert!(c.proxy.is_trusted("10.1.0.9".parse().unwrap()));
    assert!(c.proxy.is_trusted("::ffff:10.1.0.9".parse().unwrap()));
    assert!(!c.proxy.is_trusted("10.1.1.9".parse().unwrap()));
    // A ban on the balancer, or on an IPv6 /64 holding it, would refuse every client.
    assert!(c.guard.covers_balancer("10.1.0.9".parse().unwrap()));
    assert!(c.guard.covers_balancer("2001:db8::77".parse().unwrap()));
    assert!(!c.guard.covers_balancer("10.1.1.9".parse().unwrap()));
    assert!(!c.guard.covers_balancer("2001:db8:0:1::77".parse().unwrap()));
    // The shield lets the balancers through: their SYNs carry every proxied client.
    assert_eq!(
        c.shield.allow,
        ["192.0.2.0/24", "10.1.0.0/24", "2001:db8::10/128"]
    );
}

#[test]
fn a_proxy_listener_without_trusted_balancers_is_refused() {
    let text = edit(
        "role = \"delivery\"",
        "role = \"delivery\"\nproxy_protocol = true",
    );
    assert_eq!(keys(&text), ["listener[0].proxy_protocol"]);
    assert_eq!(
        keys(&format!("{text}\n[proxy]\ntrusted = []\n")),
        ["listener[0].proxy_protocol"]
    );
    // Balancers without a PROXY listener change nothing in the shield.
    let c =
        Config::from_toml_str(&format!("{BASE}\n[proxy]\ntrusted = [\"10.1.0.0/24\"]\n")).unwrap();
    assert!(c.shield.allow.is_empty());
}

#[test]
fn control_socket_defaults_into_the_spool_directory() {
    let c = Config::from_toml_str(BASE).unwrap();
    assert_eq!(
        c.control.socket,
        std::path::Path::new("/var/spool/smtp-edge/control.sock")
    );
    let c =
        Config::from_toml_str(&format!("{BASE}\n[control]\nsocket = \"/run/se.sock\"\n")).unwrap();
    assert_eq!(c.control.socket, std::path::Path::new("/run/se.sock"));
    let long = format!("/{}", "d".repeat(120));
    let got = errors(&format!("{BASE}\n[control]\nsocket = \"{long}\"\n"));
    assert_eq!(got.len(), 1, "{got:?}");
    assert!(
        got[0].to_string().starts_with("control.socket: ") && got[0].problem.contains("107"),
        "{got:?}"
    );
}

#[test]
fn shield_ports_default_to_the_delivery_listeners() {
    let more = "[[listener]]\naddr = \"[::1]:2525\"\nrole = \"delivery\"\n\n\
                [[listener]]\naddr = \"127.0.0.1:25\"\nrole = \"delivery\"\n\n\
                [[listener]]\naddr = \"127.0.0.1:0\"\nrole = \"delivery\"\n\n\
                [[listener]]\naddr = \"127.0.0.1:587\"\nrole = \"submission\"\ntls = \"starttls\"\n";
    let c = Config::from_toml_str(&format!("{BASE}\n{more}\n[shield]\nsyn_rate = 3\n")).unwrap();
    assert_eq!(
        c.shield.ports,
        [2525, 25],
        "delivery only, each once, port 0 left out"
    );
    assert_eq!(c.shield.syn_rate, 3);

    // Given ports are kept as written, even without a delivery listener on them.
    let c = Config::from_toml_str(&format!("{BASE}\n[shield]\nports = [25, 587]\n")).unwrap();
    assert_eq!(c.shield.ports, [25, 587]);

    // Enabled on an interface that exists (every namespace has lo) is a valid shield config;
    // loading it is the server's business.
    let text = format!(
        "{BASE}\n[shield]\nenabled = true\nrequired = true\ninterfaces = [\"lo\"]\n\
         allow = [\"192.0.2.0/24\", \"2001:db8::/32\"]\nban_secs = 3\npin = false\n"
    );
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(
        c.shield,
        ShieldConfig {
            enabled: true,
            required: true,
            interfaces: vec!["lo".into()],
            ports: vec![2525],
            allow: vec!["192.0.2.0/24".into(), "2001:db8::/32".into()],
            ban_secs: 3,
            ..ShieldConfig::default()
        }
    );

    // Enabled, with only port-0 delivery listeners and no ports: nothing to protect.
    let port0 = edit("127.0.0.1:2525", "127.0.0.1:0");
    let text = format!("{port0}\n[shield]\nenabled = true\ninterfaces = [\"lo\"]\n");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "shield.ports");
    // Disabled, the same file is fine.
    assert!(Config::from_toml_str(&format!("{port0}\n[shield]\nsyn_rate = 3\n")).is_ok());
}

#[test]
fn greet_delay_and_connection_limit_are_typed() {
    let text = format!(
        "{BASE}\n[[listener]]\naddr = \"127.0.0.1:2600\"\nrole = \"delivery\"\n\
         greet_delay_ms = 300\n\n[[listener]]\naddr = \"127.0.0.1:2465\"\n\
         role = \"submission\"\ntls = \"implicit\"\ngreet_delay_ms = 0\n\n\
         [limits]\nmax_connections_per_ip = 0\n"
    );
    let c = Config::from_toml_str(&text).unwrap();
    let delays: Vec<Duration> = c.listeners.iter().map(|l| l.greet_delay).collect();
    assert_eq!(
        delays,
        [Duration::ZERO, Duration::from_millis(300), Duration::ZERO]
    );
    assert_eq!(c.limits.max_connections_per_ip, 0, "0 = no limit");
    let c = Config::from_toml_str(&format!(
        "{BASE}\n[limits]\nmax_connections_per_ip = 100000\n"
    ))
    .unwrap();
    assert_eq!(c.limits.max_connections_per_ip, 100_000);

    let e = errors(&format!(
        "{BASE}\n[[listener]]\naddr = \"127.0.0.1:2465\"\nrole = \"submission\"\n\
         tls = \"implicit\"\ngreet_delay_ms = 300\n"
    ));
    assert!(
        e[0].to_string().starts_with(
            "listener[1].greet_delay_ms: not allowed with tls = \"implicit\": the client speaks first"
        ),
        "{}",
        e[0]
    );
    let e = errors(&format!(
        "{BASE}\n[limits]\nmax_connections_per_ip = 100001\n"
    ));
    assert_eq!(
        e[0].to_string(),
        "limits.max_connections_per_ip: must be 0..=100000 (0 = no limit), got 100001"
    );
}

#[test]
fn shield_greet_and_limit_problems_are_all_reported() {
    let text = format!(
        "{BASE}\n[[listener]]\naddr = \"127.0.0.1:2600\"\nrole = \"delivery\"\n\
         greet_delay_ms = 99999\n\n[limits]\nmax_connections_per_ip = -3\n\n\
         [shield]\nenabled = true\ninterfaces = [\"smtp-edge-no0\"]\nsyn_rate = 0\n\
         allow = [\"nonsense\"]\n"
    );
    let mut got = keys(&text);
    got.sort();
    assert_eq!(
        got,
        [
            "limits.max_connections_per_ip",
            "listener[1].greet_delay_ms",
            "shield.allow[0]",
            "shield.interfaces[0]",
            "shield.syn_rate",
        ]
    );
    let e = errors(&text);
    let iface = e.iter().find(|e| e.key == "shield.interfaces[0]").unwrap();
    assert!(iface.problem.contains("no such interface"), "{iface}");
}

#[test]
fn engine_config_carries_the_limits() {
    let text = format!(
        "{BASE}\n[limits]\nmax_message_size = 100000\nmax_recipients = 150\nmax_bad_commands = 3\ncommand_timeout_secs = 2\ndata_timeout_secs = 1\n"
    );
    let c = Config::from_toml_str(&text).unwrap();
    let submission = ListenerConfig {
        role: Role::Submission,
        ..c.listeners[0].clone()
    };
    let e = c.engine_config(&submission);
    assert_eq!(e.role, Role::Submission);
    assert_eq!(e.hostname, "mx.example.test");
    assert!(e.local_domains.contains("example.test"));
    assert_eq!(e.max_message_size, 100_000);
    assert_eq!(e.max_recipients, 150);
    assert_eq!(e.max_bad_commands, 3);
    assert_eq!(e.timeouts.command, Duration::from_secs(2));
    assert_eq!(e.timeouts.data_block, Duration::from_secs(1));
}

#[test]
fn load_reports_an_unreadable_file_under_file_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent.toml");
    let ConfigErrors(e) = Config::load(&path).unwrap_err();
    assert_eq!(e.len(), 1);
    assert_eq!(e[0].key, FILE_KEY);
    assert!(e[0].problem.contains("absent.toml"), "{}", e[0]);

    let path = dir.path().join("edge.toml");
    std::fs::write(&path, BASE).unwrap();
    assert_eq!(Config::load(&path).unwrap().hostname, "mx.example.test");
}

fn with_recipients(contents: &[u8]) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents).unwrap();
    let text = edit(
        "maildir = \"/var/mail/smtp-edge\"",
        &format!(
            "maildir = \"/var/mail/smtp-edge\"\nrecipients = {:?}",
            file.path().to_str().unwrap()
        ),
    );
    (file, text)
}

#[test]
fn recipients_file_is_loaded_and_normalised() {
    let (_file, text) = with_recipients(b"# users\nAlice@Example.test\n\nbob@example.test\r\n");
    let c = Config::from_toml_str(&text).unwrap();
    let set = c.recipients.as_ref().unwrap();
    assert_eq!(set.len(), 2);
    assert!(set.contains("alice@example.test") && set.contains("bob@example.test"));
    // The engine asks the same set, through the shared rewriting table.
    assert!(Arc::ptr_eq(
        c.rewrite.load().recipients.as_ref().unwrap(),
        set
    ));
    let e = c.engine_config(&c.listeners[0]);
    let check = e.recipients.as_ref().unwrap();
    assert!(check.exists("ALICE", "example.test"));
    assert!(check.exists("alice+news", "example.test"), "+tag");
    assert!(!check.exists("carol", "example.test"));
}

/// BASE with an aliases file of `contents` and `extra` lines in `[delivery]`.
fn with_aliases(contents: &str, extra: &str) -> (tempfile::NamedTempFile, String) {
    let mut file = tempfile::NamedTempFile::new().unwrap();
    file.write_all(contents.as_bytes()).unwrap();
    let text = edit(
        "maildir = \"/var/mail/smtp-edge\"",
        &format!(
            "maildir = \"/var/mail/smtp-edge\"\naliases = {:?}\n{extra}",
            file.path().to_str().unwrap()
        ),
    );
    (file, text)
}

#[test]
fn aliases_catch_all_and_delimiter_are_loaded() {
    let (_file, text) = with_aliases(
        "# staff\nPostmaster@example.test: alice@example.test, ops@remote.test\n",
        "recipient_delimiter = \"-\"\ncatch_all = { \"Example.TEST\" = \"bob@example.test\" }",
    );
    let c = Config::from_toml_str(&text).unwrap();
    let r = c.rewrite.load();
    assert_eq!(
        r.aliases["postmaster@example.test"],
        ["alice@example.test", "ops@remote.test"]
    );
    assert_eq!(r.catch_all["example.test"], "bob@example.test");
    assert_eq!(r.delimiter, "-");
    assert_eq!(
        Config::from_toml_str(BASE)
            .unwrap()
            .rewrite
            .load()
            .delimiter,
        "+"
    );
}

#[test]
fn alias_loops_and_bad_rewriting_keys_are_reported() {
    let (_file, text) = with_aliases(
        "a@example.test: b@example.test\nb@example.test: c@example.test, a@example.test\nx@other.test: a@example.test\nbad line\n",
        "catch_all = { \"other.test\" = \"a@example.test\", \"example.test\" = \"not an address\" }\nrecipient_delimiter = \"@\"",
    );
    let shown: Vec<String> = errors(&text).iter().map(|e| e.to_string()).collect();
    for want in [
        "delivery.recipient_delimiter: ",
        "delivery.aliases: line 3: \"x@other.test\": an alias must be in local_domains",
        "delivery.aliases: line 4: ",
        "delivery.aliases: line 1: alias loop: a@example.test -> b@example.test -> a@example.test",
        "delivery.catch_all.other.test: not one of local_domains",
        "delivery.catch_all.example.test: \"not an address\" is not an address",
    ] {
        assert!(
            shown.iter().any(|s| s.starts_with(want)),
            "missing {want:?} in {shown:#?}"
        );
    }
}

#[test]
fn recipients_file_bad_lines_are_numbered() {
    let (_file, text) = with_recipients(b"ok@example.test\nnot an address\nx@elsewhere.test\n");
    let e = errors(&text);
    let shown: Vec<String> = e.iter().map(|e| e.to_string()).collect();
    assert_eq!(e.len(), 2, "{shown:?}");
    assert!(
        shown[0].starts_with("delivery.recipients: line 2: "),
        "{shown:?}"
    );
    assert!(
        shown[1].starts_with("delivery.recipients: line 3: "),
        "{shown:?}"
    );
}

#[test]
fn recipients_file_bad_lines_are_capped() {
    let body = "bad\n".repeat(MAX_REPORTED_LINE_ERRORS + 5);
    let (_file, text) = with_recipients(body.as_bytes());
    let e = errors(&text);
    assert_eq!(e.len(), MAX_REPORTED_LINE_ERRORS + 1);
    assert!(
        e.last().unwrap().problem.starts_with("5 more bad lines"),
        "{:?}",
        e.last()
    );
}

#[test]
fn recipients_file_missing_names_the_key() {
    let text = edit(
        "maildir = \"/var/mail/smtp-edge\"",
        "maildir = \"/var/mail/smtp-edge\"\nrecipients = \"/nonexistent/smtp-edge/recipients\"",
    );
    assert_eq!(keys(&text), ["delivery.recipients"]);
}

/// `require_tls` defaults by role and mode, and reaches the engine with `tls_offered`.
#[test]
fn require_tls_defaults_and_engine_flags() {
    let rows: &[(&str, &str, Option<bool>, bool, bool)] = &[
        // (role, tls, require_tls written, require_tls typed, tls_offered)
        ("delivery", "none", None, false, false),
        ("delivery", "none", Some(false), false, false),
        ("delivery", "starttls", None, false, true), // RFC 3207 §4
        ("delivery", "starttls", Some(true), true, true),
        ("submission", "none", None, false, false),
        ("submission", "starttls", None, true, true),
        ("submission", "starttls", Some(false), false, true),
        ("submission", "implicit", None, true, false), // RFC 8314 §3.3
        ("submission", "implicit", Some(true), true, false),
        ("delivery", "implicit", None, true, false),
    ];
    for &(role, tls, written, typed, offered) in rows {
        let mut listener =
            format!("[[listener]]\naddr = \"127.0.0.1:1\"\nrole = \"{role}\"\ntls = \"{tls}\"\n");
        if let Some(w) = written {
            listener.push_str(&format!("require_tls = {w}\n"));
        }
        let mut text = format!("{BASE}\n{listener}");
        if (role, tls) == ("submission", "none") {
            // Plaintext submission only on purpose.
            text.push_str("\n[auth]\nallow_plaintext = true\n");
        }
        let c = Config::from_toml_str(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
        let l = &c.listeners[1];
        assert_eq!(l.require_tls, typed, "{role} {tls} {written:?}");
        let e = c.engine_config(l);
        assert_eq!(
            (e.tls_offered, e.tls_required),
            (offered, typed),
            "{role} {tls} {written:?}"
        );
    }
}

#[test]
fn tls_section_is_typed_and_paths_are_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, "placeholder").unwrap();
        p.to_str().unwrap().to_owned()
    };
    let (cert, key, a_cert, a_key) = (path("c.pem"), path("k.pem"), path("a.pem"), path("a.key"));
    let text = format!(
        "{BASE}\n[tls]\ncert = {cert:?}\nkey = {key:?}\nsession_cache = 0\nhandshake_timeout_secs = 3\n\
         [[tls.certificate]]\ncert = {a_cert:?}\nkey = {a_key:?}\n"
    );
    let c = Config::from_toml_str(&text).unwrap();
    assert_eq!(
        c.tls,
        TlsConfig {
            default_cert: CertSource::Files(CertEntry::new("tls", &cert, &key)),
            certificates: vec![CertEntry::new("tls.certificate[0]", &a_cert, &a_key)],
            session_cache: 0,
            handshake_timeout: Duration::from_secs(3),
        }
    );

    // Unreadable files, a directory, and a bad entry: each named, all reported.
    let missing = dir.path().join("missing.pem");
    let text = format!(
        "{BASE}\n[tls]\ncert = {missing:?}\nkey = {:?}\n\
         [[tls.certificate]]\ncert = {a_cert:?}\nkey = {a_key:?}\n\
         [[tls.certificate]]\ncert = {a_cert:?}\nkey = {a_key:?}\nextra = 1\n",
        dir.path()
    );
    let e = errors(&text);
    let got: Vec<&str> = e.iter().map(|e| e.key.as_str()).collect();
    assert_eq!(
        got,
        ["tls.certificate[1].extra", "tls.cert", "tls.key"],
        "{e:?}"
    );
    assert!(e[1].problem.starts_with("cannot read "), "{}", e[1]);
    assert!(e[2].problem.ends_with("is not a regular file"), "{}", e[2]);
}

/// The validated `[tls]` of the embedded default gives a working TLS context.
#[test]
fn self_signed_tls_config_builds_a_context() {
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "{BASE}\n[tls]\nself_signed_dir = {:?}\n",
        dir.path().join("tls")
    );
    let c = Config::from_toml_str(&text).unwrap();
    crate::tls::TlsContext::new(&c.tls, crate::clock::wall()).unwrap();
    assert!(dir.path().join("tls/key.pem").exists());
}

#[test]
fn auth_defaults_and_typed_values() {
    let c = Config::from_toml_str(BASE).unwrap();
    assert_eq!(c.auth, AuthConfig::default());
    assert!(!c.auth.offers_auth());
    let text = format!(
        "{BASE}\n[auth]\nmax_failures = 3\nfailure_window_secs = 60\nban_secs = 120\n\
         tarpit_max_ms = 0\nverify_threads = 4\nmax_checks_per_source = 3\ntrace_login = true\n\
         submission_networks = [\"10.0.0.0/8\", \"192.0.2.7\", \"2001:db8::/32\"]\n"
    );
    let a = Config::from_toml_str(&text).unwrap().auth;
    assert_eq!(a.max_failures, 3);
    assert_eq!(a.failure_window, Duration::from_secs(60));
    assert_eq!(a.ban, Duration::from_secs(120));
    assert_eq!(a.tarpit_max, Duration::ZERO);
    assert_eq!(a.verify_threads, 4);
    assert_eq!(a.max_checks_per_source, 3);
    assert_eq!(AuthConfig::default().max_checks_per_source, 8);
    assert!(a.trace_login);
    let nets: Vec<String> = a
        .submission_networks
        .iter()
        .map(|n| n.to_string())
        .collect();
    assert_eq!(nets, ["10.0.0.0/8", "192.0.2.7/32", "2001:db8::/32"]);
    assert!(a.is_trusted("10.200.0.1".parse().unwrap()));
    assert!(!a.is_trusted("192.0.2.8".parse().unwrap()));
}

#[test]
fn auth_submission_networks_errors_name_the_entry() {
    let text = format!(
        "{BASE}\n[auth]\nsubmission_networks = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"nope\", \
         \"10.1.2.3/8\"]\n"
    );
    let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "auth.submission_networks[1]: prefix length 33 is longer than 32 bits",
            "auth.submission_networks[2]: \"nope\" is not an IP address or CIDR prefix (like \
             192.0.2.0/24 or 2001:db8::/32)",
            "auth.submission_networks[3]: \"10.1.2.3/8\" has host bits set; did you mean \
             10.0.0.0/8?",
        ]
    );
}

#[test]
fn auth_files_are_loaded_and_bad_lines_named() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("users");
    let aliases = dir.path().join("aliases");
    let phc = crate::auth::hash_password(b"pw", crate::auth::users::tests::FAST).unwrap();
    std::fs::write(&users, format!("# users\nAlice@Example.TEST:{phc}\n")).unwrap();
    std::fs::write(&aliases, "sales@example.test: alice@example.test\n").unwrap();
    let text = format!("{BASE}\n[auth]\nusers = {users:?}\naliases = {aliases:?}\n");
    let a = Config::from_toml_str(&text).unwrap().auth;
    assert!(a.offers_auth());
    assert_eq!(a.users.as_deref(), Some(users.as_path()));
    assert!(a.credentials.contains("alice@example.test"));
    assert!(a
        .credentials
        .may_send_as("alice@example.test", "sales@example.test"));

    std::fs::write(&users, format!("alice@example.test:{phc}\nbroken\nx@y.test:$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHQ$AAAAAAAAAAAAAAAAAAAAAA\n")).unwrap();
    std::fs::write(&aliases, "\n\nno-colon\n").unwrap();
    let got: Vec<String> = errors(&text).iter().map(ToString::to_string).collect();
    assert_eq!(got.len(), 3, "{got:?}");
    assert!(
        got[0].starts_with("auth.users: line 2: expected address:"),
        "{}",
        got[0]
    );
    assert!(
        got[1].starts_with("auth.users: line 3: x@y.test: the hash is argon2i"),
        "{}",
        got[1]
    );
    assert!(
        got[2].starts_with("auth.aliases: line 3: expected alias@domain"),
        "{}",
        got[2]
    );
    assert!(
        got.iter().all(|e| !e.contains("AAAAAAAAAAAAAAAAAAAAAA")),
        "hashes are not quoted: {got:?}"
    );
}

#[test]
fn delivery_mode_is_an_octal_file_mode_for_a_mail_group() {
    let with = |mode: &str| {
        edit(
            "maildir = \"/var/mail/smtp-edge\"",
            &format!("maildir = \"/var/mail/smtp-edge\"\nmode = {mode:?}"),
        )
    };
    assert_eq!(Config::from_toml_str(BASE).unwrap().maildir_mode, 0o600);
    for (text, mode) in [("0600", 0o600), ("0660", 0o660), ("0640", 0o640)] {
        assert_eq!(
            Config::from_toml_str(&with(text)).unwrap().maildir_mode,
            mode
        );
    }
    // Execute bits, special bits, an owner who cannot read or write, and what is not octal.
    for bad in [
        "0700", "0664x", "4660", "0400", "660", "0o660", "0680", "", "0066",
    ] {
        let errs = errors(&with(bad));
        assert_eq!(errs.len(), 1, "{bad:?}: {errs:?}");
        assert_eq!(errs[0].key, "delivery.mode", "{bad:?}");
        assert!(
            errs[0].problem.contains("0660"),
            "{bad:?}: {}",
            errs[0].problem
        );
    }
}

#[test]
fn relay_defaults_when_absent() {
    use crate::protocol::client::TlsPolicy;
    use crate::relay::{RelayConfig, Route};
    let c = Config::from_toml_str(BASE).unwrap();
    assert_eq!(c.relay, RelayConfig::new("mx.example.test"));
    assert_eq!(c.relay.local, Route::Maildir);
    assert_eq!(c.relay.remote, Route::Mx);
    assert_eq!(c.relay.mx_port, 25);
    assert_eq!(c.relay.tls, TlsPolicy::Opportunistic);
    assert_eq!(c.relay.max_connections_per_domain, 10);
    assert_eq!(c.relay.connect_timeout, Duration::from_secs(30));
    assert_eq!(c.relay.idle, Duration::from_secs(2));
    assert_eq!(c.relay.helo, "mx.example.test");
    assert!(c.relay.nameservers.is_empty());
    assert!(c.relay.smarthost_credentials.is_none());
    assert_eq!(c.relay.max_age, Duration::from_secs(5 * 24 * 3600));
    // The schedule: each listed wait, then the last one repeating.
    let waits: Vec<u64> = (1..=7).map(|n| c.relay.retry_delay(n).as_secs()).collect();
    assert_eq!(waits, [60, 300, 900, 3600, 14400, 14400, 14400]);
    // The embedded default spells the same relay defaults out.
    let d = Config::embedded_default();
    assert_eq!(d.relay, RelayConfig::new(&d.hostname));
}

#[test]
fn relay_keys_are_typed() {
    use crate::protocol::client::TlsPolicy;
    use crate::relay::{Host, NextHop, Route};
    let dir = tempfile::tempdir().unwrap();
    let pw = dir.path().join("pw");
    std::fs::write(&pw, "s3cret\nignored second line\n").unwrap();
    let text = format!(
        "{BASE}\n[relay]\nlocal = \"lmtp+unix:///run/dovecot/lmtp\"\n\
         remote = \"smtp://smarthost.example.test:587\"\n\
         smarthost_user = \"relay@example.test\"\n\
         smarthost_password_file = \"{}\"\nmx_port = 2525\ntls = \"required\"\n\
         max_connections_per_domain = 3\nconnect_timeout_secs = 7\nidle_secs = 0\n\
         retry_secs = [5, 10]\nmax_age_secs = 3600\n\
         [dns]\nnameservers = [\"127.0.0.1:5353\", \"::1\"]\n",
        pw.display()
    );
    let r = Config::from_toml_str(&text).unwrap().relay;
    assert_eq!(r.local, Route::LmtpUnix("/run/dovecot/lmtp".into()));
    assert_eq!(
        r.remote,
        Route::Smtp(NextHop {
            host: Host::Name("smarthost.example.test".into()),
            port: 587
        })
    );
    let creds = r.smarthost_credentials.as_ref().unwrap();
    assert_eq!(creds.username, "relay@example.test");
    assert_eq!(creds.password.expose(), b"s3cret");
    assert!(!creds.allow_plaintext);
    assert_eq!(r.mx_port, 2525);
    assert_eq!(r.tls, TlsPolicy::Required);
    assert_eq!(r.max_connections_per_domain, 3);
    assert_eq!(r.connect_timeout, Duration::from_secs(7));
    assert_eq!(r.idle, Duration::ZERO, "0: QUIT as soon as nothing waits");
    assert_eq!(r.retry, [Duration::from_secs(5), Duration::from_secs(10)]);
    assert_eq!(r.retry_delay(9), Duration::from_secs(10));
    assert_eq!(r.max_age, Duration::from_secs(3600));
    assert_eq!(
        r.nameservers,
        [
            "127.0.0.1:5353".parse::<SocketAddr>().unwrap(),
            "[::1]:53".parse().unwrap()
        ]
    );
    assert_eq!(r.route(true), &r.local);
    assert_eq!(r.route(false), &r.remote);
    // Credentials never show in Debug output.
    assert!(!format!("{r:?}").contains("s3cret"));
}

#[test]
fn relay_errors_name_their_keys() {
    let bad = |section: &str| format!("{BASE}\n{section}\n");
    let cases: &[(&str, &[&str])] = &[
        ("[relay]\nlocal = \"mx\"", &["relay.local"]),
        ("[relay]\nlocal = \"pop3://a:1\"", &["relay.local"]),
        ("[relay]\nremote = \"maildir\"", &["relay.remote"]),
        (
            "[relay]\nremote = \"lmtp://127.0.0.1:24\"",
            &["relay.remote"],
        ),
        ("[relay]\nremote = \"smtp://host\"", &["relay.remote"]),
        ("[relay]\nmx_port = 0", &["relay.mx_port"]),
        ("[relay]\nmx_port = 70000", &["relay.mx_port"]),
        ("[relay]\ntls = \"may\"", &["relay.tls"]),
        (
            "[relay]\nmax_connections_per_domain = 0",
            &["relay.max_connections_per_domain"],
        ),
        (
            "[relay]\nconnect_timeout_secs = 0",
            &["relay.connect_timeout_secs"],
        ),
        ("[relay]\nidle_secs = -1", &["relay.idle_secs"]),
        // Longer than a receiver would keep a silent connection: it would be gone under the
        // next message.
        ("[relay]\nidle_secs = 61", &["relay.idle_secs"]),
        ("[relay]\nretry_secs = []", &["relay.retry_secs"]),
        ("[relay]\nretry_secs = [60, -1]", &["relay.retry_secs[1]"]),
        ("[relay]\nmax_age_secs = 1", &["relay.max_age_secs"]),
        (
            "[relay]\nsmarthost_user = \"u\"",
            &["relay.smarthost_password_file"],
        ),
        (
            "[relay]\nsmarthost_password_file = \"/etc/hostname\"",
            &["relay.smarthost_user"],
        ),
        (
            // AUTH with MX delivery: credentials for whom?
            "[relay]\nsmarthost_user = \"u\"\nsmarthost_password_file = \"/etc/hostname\"",
            &["relay.smarthost_user"],
        ),
        (
            "[relay]\nremote = \"smtp://a.test:25\"\nsmarthost_user = \"u\"\n\
             smarthost_password_file = \"/nonexistent/pw\"",
            &["relay.smarthost_password_file"],
        ),
        ("[relay]\nbogus = 1", &["relay.bogus"]),
        (
            "[dns]\nnameservers = [\"localhost\"]",
            &["dns.nameservers[0]"],
        ),
        (
            "[dns]\nnameservers = [\"127.0.0.1:0\", \"1.2.3.4\"]",
            &["dns.nameservers[0]"],
        ),
        ("[dns]\nservers = []", &["dns.servers"]),
        // Every problem at once, none hiding another.
        (
            "[relay]\nlocal = \"x\"\nremote = \"y\"\nmx_port = 0\n[dns]\nnameservers = [\"z\"]",
            &[
                "relay.local",
                "relay.remote",
                "relay.mx_port",
                "dns.nameservers[0]",
            ],
        ),
    ];
    for (section, want) in cases {
        assert_eq!(keys(&bad(section)), *want, "{section}");
    }
    let e = errors(&bad("[relay]\nremote = \"smtp://host\""));
    assert!(
        e[0].problem.contains("port is required"),
        "{}",
        e[0].problem
    );
}

#[test]
fn line_length_and_strict_envelopes_reach_the_engine() {
    let c = Config::from_toml_str(BASE).unwrap();
    let e = c.engine_config(&c.listeners[0]);
    assert_eq!((e.max_line_length, e.strict_envelopes), (65_536, false));
    let c = Config::from_toml_str(&format!(
        "{BASE}\n[limits]\nmax_line_length = 1000\nstrict_envelopes = true\n"
    ))
    .unwrap();
    let e = c.engine_config(&c.listeners[0]);
    assert_eq!((e.max_line_length, e.strict_envelopes), (1000, true));
    for bad in ["999", "0", "-1", "2000000000"] {
        let errs = errors(&format!("{BASE}\n[limits]\nmax_line_length = {bad}\n"));
        assert_eq!(errs.len(), 1, "{bad}: {errs:?}");
        assert_eq!(errs[0].key, "limits.max_line_length");
        assert!(errs[0].problem.contains("1000"), "{}", errs[0].problem);
    }
    assert_eq!(
        keys(&format!("{BASE}\n[limits]\nstrict_envelopes = \"yes\"\n")),
        ["limits.strict_envelopes"]
    );
}

#[test]
fn checks_default_to_tag_and_each_mode_is_typed() {
    use crate::checks::{CheckMode, ChecksConfig};
    let tag = ChecksConfig {
        spf: CheckMode::Tag,
        dkim: CheckMode::Tag,
        dmarc: CheckMode::Tag,
        arc: CheckMode::Tag,
        dnsbl: crate::guard::DnsblConfig::default(),
    };
    assert_eq!(Config::from_toml_str(BASE).unwrap().checks, tag);
    assert_eq!(Config::embedded_default().checks, tag);
    let c = Config::from_toml_str(&format!(
        "{BASE}\n[checks]\nspf = \"enforce\"\ndkim = \"off\"\ndmarc = \"enforce\"\n"
    ))
    .unwrap();
    assert_eq!(
        c.checks,
        ChecksConfig {
            spf: CheckMode::Enforce,
            dkim: CheckMode::Off,
            dmarc: CheckMode::Enforce,
            arc: CheckMode::Tag,
            dnsbl: crate::guard::DnsblConfig::default(),
        }
    );
    let all_off = "[checks]\nspf = \"off\"\ndkim = \"off\"\ndmarc = \"off\"\narc = \"off\"\n";
    let c = Config::from_toml_str(&format!("{BASE}\n{all_off}")).unwrap();
    assert!(!c.checks.any());
}

#[test]
fn bad_check_modes_name_their_keys() {
    let bad = |section: &str| format!("{BASE}\n{section}\n");
    assert_eq!(
        keys(&bad(
            "[checks]\nspf = \"reject\"\ndmarc = \"Tag\"\narc = true"
        )),
        ["checks.arc"],
        "a type error stops the section first"
    );
    assert_eq!(
        keys(&bad("[checks]\nspf = \"reject\"\ndmarc = \"Tag\"")),
        ["checks.spf", "checks.dmarc"]
    );
    assert_eq!(keys(&bad("[checks]\nspff = \"tag\"")), ["checks.spff"]);
    let e = errors(&bad("[checks]\ndkim = \"on\""));
    assert_eq!(
        e[0].to_string(),
        "checks.dkim: expected one of \"off\", \"tag\", \"enforce\", got \"on\""
    );
}

#[test]
fn a_reload_keeps_the_running_values_of_keys_that_need_a_restart() {
    let running = Config::from_toml_str(&format!(
        "{BASE}\n[metrics]\naddr = \"127.0.0.1:9125\"\n[shield]\nban_secs = 600\n"
    ))
    .unwrap();
    // Everything a reload applies, changed together with every key that needs a restart.
    let text = format!(
        "{}\n[metrics]\naddr = \"127.0.0.1:9126\"\n\
         [shield]\nban_secs = 60\nsyn_rate = 99\n\
         [limits]\nmax_recipients = 200\n\
         [auth]\nverify_threads = 3\n\
         [tls]\nsession_cache = 10\n\
         [checks]\nspf = \"enforce\"\n\
         [dns]\nnameservers = [\"192.0.2.53\"]\n\
         [shutdown]\ngrace_secs = 5\n\
         [log]\nformat = \"json\"\n\
         [control]\nsocket = \"/run/other.sock\"\n",
        BASE.replace("127.0.0.1:2525", "127.0.0.1:2526")
            .replace("/var/spool/smtp-edge", "/var/spool/other")
            .replace("/var/mail/smtp-edge", "/var/mail/other")
            .replace(
                "local_domains = [\"Example.TEST\"]",
                "local_domains = [\"example.test\", \"new.test\"]\nworkers = 3"
            )
    );
    let mut fresh = Config::from_toml_str(&text).unwrap();
    let restart = fresh.keep_restart_keys(&running);
    assert_eq!(
        restart,
        [
            "workers",
            "listener",
            "spool.dir",
            "delivery.maildir",
            "control.socket",
            "metrics.addr",
            "shield",
            "auth.verify_threads",
            "tls.session_cache",
            "checks",
            "dns.nameservers",
            "log.format",
            "shutdown.grace_secs",
        ]
    );
    assert_eq!(fresh.log, running.log);
    assert_eq!(fresh.checks, running.checks);
    assert_eq!(fresh.workers, running.workers);
    assert_eq!(fresh.listeners, running.listeners);
    assert_eq!(fresh.spool_dir, running.spool_dir);
    assert_eq!(fresh.maildir, running.maildir);
    assert_eq!(fresh.control, running.control);
    assert_eq!(fresh.metrics_addr, running.metrics_addr);
    assert_eq!(fresh.shield.syn_rate, running.shield.syn_rate);
    assert_eq!(fresh.auth.verify_threads, running.auth.verify_threads);
    assert_eq!(fresh.relay.nameservers, running.relay.nameservers);
    assert_eq!(fresh.shutdown_grace, running.shutdown_grace);
    // What a reload applies is the file's.
    assert_eq!(fresh.local_domains, ["example.test", "new.test"]);
    assert_eq!(fresh.limits.max_recipients, 200);
    assert_eq!(fresh.shield.ban_secs, 60);
    // Applied once, nothing is left to restart for.
    assert!(fresh.keep_restart_keys(&running).is_empty());
    let mut same = running.clone();
    assert!(same.keep_restart_keys(&running).is_empty());
}

#[test]
fn dkim_sign_entries_load_their_keys() {
    let dir = tempfile::tempdir().unwrap();
    let rsa = dir.path().join("rsa.pem");
    let ed = dir.path().join("ed.pem");
    std::fs::write(
        &rsa,
        crate::dkim::generate(crate::dkim::KeyAlgorithm::Rsa, 2048).unwrap(),
    )
    .unwrap();
    std::fs::write(
        &ed,
        crate::dkim::generate(crate::dkim::KeyAlgorithm::Ed25519, 0).unwrap(),
    )
    .unwrap();
    let text = format!(
        "{BASE}\n[[dkim.sign]]\ndomain = \"Example.TEST\"\nselector = \"s1\"\nkey = {:?}\n\
         [[dkim.sign]]\ndomain = \"other.test\"\nselector = \"2026.ed\"\nkey = {:?}\n",
        rsa.display().to_string(),
        ed.display().to_string()
    );
    let c = Config::from_toml_str(&text).unwrap();
    let header = |from: &str| format!("From: {from}\r\n\r\n");
    let key = c.dkim.key_for(header("a@example.test").as_bytes()).unwrap();
    assert_eq!(
        (key.domain.as_str(), key.selector.as_str()),
        ("example.test", "s1")
    );
    assert_eq!(key.key.algorithm(), crate::dkim::KeyAlgorithm::Rsa);
    let key = c.dkim.key_for(header("b@other.test").as_bytes()).unwrap();
    assert_eq!(key.key.algorithm(), crate::dkim::KeyAlgorithm::Ed25519);
    assert!(Config::from_toml_str(BASE).unwrap().dkim.is_empty());
}

#[test]
fn dkim_sign_problems_name_their_entry() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("small.pem");
    let key = rsa::RsaPrivateKey::new(&mut rsa::rand_core::OsRng, 1024).unwrap();
    let pem = rsa::pkcs8::EncodePrivateKey::to_pkcs8_pem(&key, Default::default()).unwrap();
    std::fs::write(&small, pem.as_bytes()).unwrap();
    let good = dir.path().join("good.pem");
    std::fs::write(
        &good,
        crate::dkim::generate(crate::dkim::KeyAlgorithm::Ed25519, 0).unwrap(),
    )
    .unwrap();
    let entry = |domain: &str, selector: &str, key: &std::path::Path| {
        format!(
            "[[dkim.sign]]\ndomain = {domain:?}\nselector = {selector:?}\nkey = {:?}\n",
            key.display().to_string()
        )
    };
    let text = [
        BASE.to_owned(),
        entry("a.test", "s1", &small),
        entry("a.test", "s1", &good),
        entry("b.test", "bad selector", &good),
        entry("c..test", "s1", &good),
        entry("d.test", "s1", &dir.path().join("missing.pem")),
    ]
    .join("\n");
    let errors = errors(&text);
    let found: Vec<(&str, &str)> = errors
        .iter()
        .map(|e| (e.key.as_str(), e.problem.as_str()))
        .collect();
    let has = |key: &str, part: &str| {
        assert!(
            found.iter().any(|(k, p)| *k == key && p.contains(part)),
            "no {key} error containing {part:?}: {found:?}"
        )
    };
    has("dkim.sign[0].key", "1024 bits");
    has("dkim.sign[1].domain", "has a key already");
    has("dkim.sign[2].selector", "not a selector");
    has("dkim.sign[3].domain", "not a valid domain name");
    has("dkim.sign[4].key", "cannot read");
    assert_eq!(errors.len(), 5, "{found:?}");
    assert_eq!(
        keys(&format!(
            "{BASE}\n[[dkim.sign]]\ndomain = \"a.test\"\nselector = \"s\"\n"
        )),
        ["dkim.sign.key"]
    );
}

#[test]
fn dnsbl_lists_are_typed_and_default_to_none() {
    let c = Config::from_toml_str(BASE).unwrap();
    assert!(!c.checks.dnsbl.is_enabled());
    assert_eq!(c.checks.dnsbl.threshold, crate::guard::DEFAULT_THRESHOLD);
    let c = Config::from_toml_str(&format!(
        "{BASE}\n[checks]\ndnsbl_threshold = 4\n\
         [[checks.dnsbl]]\nzone = \"Zen.Example.\"\nweight = 4\n\
         [[checks.dnsbl]]\nzone = \"list.dnswl.example\"\nweight = -5\n"
    ))
    .unwrap();
    assert_eq!(
        c.checks.dnsbl,
        crate::guard::DnsblConfig {
            zones: vec![
                crate::guard::DnsblZone {
                    zone: "zen.example".into(),
                    weight: 4
                },
                crate::guard::DnsblZone {
                    zone: "list.dnswl.example".into(),
                    weight: -5
                },
            ],
            threshold: 4,
        }
    );
}

#[test]
fn dnsbl_problems_name_their_entry() {
    let text = format!(
        "{BASE}\n[checks]\ndnsbl_threshold = 0\n\
         [[checks.dnsbl]]\nzone = \"a.test\"\nweight = 0\n\
         [[checks.dnsbl]]\nzone = \"a.test\"\nweight = 1\n\
         [[checks.dnsbl]]\nzone = \"bad zone\"\nweight = 101\n"
    );
    let mut found = keys(&text);
    found.sort();
    assert_eq!(
        found,
        [
            "checks.dnsbl[0].weight",
            "checks.dnsbl[1].zone",
            "checks.dnsbl[2].weight",
            "checks.dnsbl[2].zone",
            "checks.dnsbl_threshold",
        ]
    );
    assert_eq!(
        keys(&format!("{BASE}\n[[checks.dnsbl]]\nzone = \"a.test\"\n")),
        ["checks.dnsbl.weight"]
    );
}

/// `config show` of `text`, loaded again: the same configuration.
fn assert_show_round_trips(text: &str) -> String {
    let config = Config::from_toml_str(text).unwrap();
    let shown = show(text, false).unwrap();
    let again = Config::from_toml_str(&shown)
        .unwrap_or_else(|e| panic!("config show output does not load: {e}\n{shown}"));
    assert_eq!(again, config, "config show lost something:\n{shown}");
    assert_eq!(show(&shown, false).unwrap(), shown, "a fixed point");
    shown
}

#[test]
fn config_show_gives_back_every_key_set_to_a_non_default() {
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, contents: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, contents).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let phc = crate::auth::hash_password(b"pw", crate::auth::users::tests::FAST).unwrap();
    let users = file("users", &format!("alice@example.test:{phc}\n"));
    let auth_aliases = file("auth-aliases", "sales@example.test: alice@example.test\n");
    let recipients = file("recipients", "alice@example.test\npost@example.test\n");
    let aliases = file("aliases", "post@example.test: alice@example.test\n");
    let (cert, key) = (file("c.pem", "x"), file("k.pem", "x"));
    let (a_cert, a_key) = (file("a.pem", "x"), file("a.key", "x"));
    let pw = file("pw", "s3cret\n");
    let dkim_key = file(
        "dkim.pem",
        &crate::dkim::generate(crate::dkim::KeyAlgorithm::Ed25519, 0).unwrap(),
    );
    let text = format!(
        r#"
hostname = "mx.example.test"
local_domains = ["example.test", "other.test"]
workers = 3
user = "root"
group = "root"

[[listener]]
addr = "127.0.0.1:2525"
role = "delivery"
tls = "starttls"
require_tls = true
greet_delay_ms = 1500
proxy_protocol = true
name = "mx"

[[listener]]
addr = "127.0.0.1:2465"
role = "submission"
tls = "implicit"

[spool]
dir = "/var/spool/x"

[delivery]
maildir = "/var/mail/x"
recipients = {recipients:?}
mode = "0660"
aliases = {aliases:?}
catch_all = {{ "other.test" = "alice@example.test" }}
recipient_delimiter = "-"

[limits]
max_message_size = 1000000
max_recipients = 200
max_bad_commands = 5
command_timeout_secs = 60
data_timeout_secs = 90
max_connections_per_ip = 7
max_connections = 900
max_line_length = 2000
strict_envelopes = true

[metrics]
addr = "127.0.0.1:9999"

[shutdown]
grace_secs = 3

[tls]
cert = {cert:?}
key = {key:?}
session_cache = 0
handshake_timeout_secs = 4

[[tls.certificate]]
cert = {a_cert:?}
key = {a_key:?}

[auth]
users = {users:?}
aliases = {auth_aliases:?}
max_failures = 2
failure_window_secs = 30
ban_secs = 40
tarpit_max_ms = 50
verify_threads = 3
max_checks_per_source = 4
submission_networks = ["10.0.0.0/8", "192.0.2.1/32"]
trace_login = true
allow_plaintext = true

[shield]
enabled = true
required = true
interfaces = ["lo"]
ports = [25, 587]
allow = ["192.0.2.0/24"]
syn_rate = 3
syn_burst = 4
pressure_syn_rate = 0
max_sources = 1024
ban_secs = 60
pin = true

[guard]
trusted = ["10.1.0.0/16"]

[control]
socket = "/run/x.sock"

[relay]
local = "lmtp://127.0.0.1:24"
remote = "smtp://smarthost.example.test:587"
smarthost_user = "relay@example.test"
smarthost_password_file = {pw:?}
mx_port = 2525
tls = "required"
max_connections_per_domain = 3
retry_secs = [5, 10]
max_age_secs = 3600
connect_timeout_secs = 7
idle_secs = 9

[dns]
nameservers = ["127.0.0.1:5353"]

[log]
format = "json"

[[dkim.sign]]
domain = "example.test"
selector = "s1"
key = {dkim_key:?}

[proxy]
trusted = ["10.9.0.0/16"]
header_timeout_secs = 2

[checks]
spf = "enforce"
dkim = "off"
dmarc = "enforce"
arc = "off"
dnsbl_threshold = 5

[[checks.dnsbl]]
zone = "zen.example"
weight = 4

[[checks.dnsbl]]
zone = "list.dnswl.example"
weight = -5
"#
    );
    let shown = assert_show_round_trips(&text);
    for line in [
        &format!("recipients = {recipients:?}") as &str,
        "greet_delay_ms = 1500",
        "max_connections = 900",
        "\"other.test\" = \"alice@example.test\"",
    ] {
        assert!(shown.contains(line), "{line:?} not shown:\n{shown}");
    }
}

#[test]
fn config_show_fills_in_defaults_and_derived_values() {
    // The required keys alone: every other key appears with its default, derived ones
    // (the control socket in the spool, the shield's ports from the delivery listeners, the
    // submission listener's require_tls) spelled out.
    let text = format!("{BASE}\n[[listener]]\naddr = \"127.0.0.1:2587\"\nrole = \"submission\"\ntls = \"starttls\"\n");
    let shown = assert_show_round_trips(&text);
    for line in [
        "workers = 0",
        "max_recipients = 100",
        "command_timeout_secs = 300",
        "socket = \"/var/spool/smtp-edge/control.sock\"",
        "ports = [2525]",
        "require_tls = true",
        "retry_secs = [60, 300, 900, 3600, 14400]",
        "trusted = [\"127.0.0.0/8\", \"::1/128\"]",
    ] {
        assert!(shown.contains(line), "{line:?} not shown:\n{shown}");
    }
    // --defaults drops what the file set beyond its required keys.
    let set = edit(
        "maildir = \"/var/mail/smtp-edge\"",
        "maildir = \"/var/mail/smtp-edge\"\nmode = \"0660\"\n[limits]\nmax_recipients = 500\n[shutdown]\ngrace_secs = 2\n",
    );
    let effective = show(&set, false).unwrap();
    assert!(effective.contains("max_recipients = 500") && effective.contains("mode = \"0660\""));
    let defaults = show(&set, true).unwrap();
    assert!(
        defaults.contains("max_recipients = 100")
            && defaults.contains("mode = \"0600\"")
            && defaults.contains("grace_secs = 30")
            && defaults.contains("hostname = \"mx.example.test\""),
        "{defaults}"
    );
    assert_show_round_trips(DEFAULT_TOML);
    // A file that does not validate shows nothing: its problems, by key.
    let err = show(
        &edit("addr = \"127.0.0.1:2525\"", "addr = \"nowhere\""),
        false,
    )
    .unwrap_err();
    assert_eq!(err.0[0].key, "listener[0].addr");
}

#[test]
fn user_and_group_are_looked_up() {
    let c = Config::from_toml_str(&format!("user = \"root\"\n{BASE}")).unwrap();
    let run_as = c.run_as.unwrap();
    assert_eq!(
        (run_as.uid, run_as.gid, run_as.group.as_str()),
        (0, 0, "root")
    );
    assert_eq!(Config::from_toml_str(BASE).unwrap().run_as, None);
    assert_eq!(
        keys(&format!("user = \"no-such-user-here\"\n{BASE}")),
        ["user"]
    );
    assert_eq!(
        keys(&format!(
            "user = \"root\"\ngroup = \"no-such-group-here\"\n{BASE}"
        )),
        ["group"]
    );
    assert_eq!(keys(&format!("group = \"root\"\n{BASE}")), ["group"]);
    assert_eq!(keys(&format!("user = \"\"\n{BASE}")), ["user"]);
    assert_eq!(keys(&format!("user = 0\n{BASE}")), ["user"]);
}

#[test]
fn metrics_on_a_listener_address_is_refused() {
    let with_metrics = |addr: &str| format!("{BASE}\n[metrics]\naddr = {addr:?}\n");
    assert_eq!(keys(&with_metrics("127.0.0.1:2525")), ["metrics.addr"]);
    assert_eq!(keys(&with_metrics("0.0.0.0:2525")), ["metrics.addr"]);
    assert_eq!(keys(&with_metrics("[::]:2525")), ["metrics.addr"]);
    let e = errors(&with_metrics("127.0.0.1:2525"));
    assert_eq!(
        e[0].to_string(),
        "metrics.addr: 127.0.0.1:2525 is also the address of listener[0] (127.0.0.1:2525)"
    );
    // Another address or port, or port 0 (the kernel picks), is no conflict.
    for ok in ["127.0.0.2:2525", "127.0.0.1:9125", "[::1]:2525"] {
        Config::from_toml_str(&with_metrics(ok)).unwrap();
    }
    let zero = edit("127.0.0.1:2525", "127.0.0.1:0");
    Config::from_toml_str(&format!("{zero}\n[metrics]\naddr = \"127.0.0.1:0\"\n")).unwrap();
}

#[test]
fn a_control_socket_on_another_configured_path_is_refused() {
    let e = errors(&format!(
        "{BASE}\n[control]\nsocket = \"/var/spool/smtp-edge\"\n"
    ));
    assert_eq!(
        e.iter().map(ToString::to_string).collect::<Vec<_>>(),
        ["control.socket: /var/spool/smtp-edge is also spool.dir"]
    );
}

#[test]
fn submission_without_tls_needs_allow_plaintext() {
    let submission = "\n[[listener]]\naddr = \"127.0.0.1:2587\"\nrole = \"submission\"\n";
    let text = format!("{BASE}{submission}");
    let e = errors(&text);
    assert_eq!(e.len(), 1, "{e:?}");
    assert_eq!(e[0].key, "listener[1].tls");
    assert!(e[0].problem.contains("auth.allow_plaintext"), "{}", e[0]);
    // STARTTLS or implicit TLS is fine, and so is plaintext on purpose.
    Config::from_toml_str(&format!("{text}tls = \"starttls\"\n")).unwrap();
    let c = Config::from_toml_str(&format!("{text}\n[auth]\nallow_plaintext = true\n")).unwrap();
    assert!(c.auth.allow_plaintext);
    assert!(c.engine_config(&c.listeners[1]).auth_plaintext);
    assert!(!Config::from_toml_str(BASE).unwrap().auth.allow_plaintext);
}

/// BASE with its spool and Maildir in `dir`, plus `extra`.
fn in_dir(dir: &std::path::Path, extra: &str) -> Config {
    let text = BASE
        .replace(
            "/var/spool/smtp-edge",
            &dir.join("spool").display().to_string(),
        )
        .replace(
            "/var/mail/smtp-edge",
            &dir.join("mail").display().to_string(),
        );
    Config::from_toml_str(&format!("{text}{extra}")).unwrap()
}

fn finding_keys(found: &[ConfigError]) -> Vec<&str> {
    found.iter().map(|e| e.key.as_str()).collect()
}

#[test]
fn preflight_finds_directories_serve_could_not_use() {
    let dir = tempfile::tempdir().unwrap();
    let now = crate::clock::wall();
    // Not there yet, but creatable: fine (serve creates them).
    let f = in_dir(dir.path(), "").preflight(now);
    assert_eq!(f, Findings::default());

    std::fs::write(dir.path().join("spool"), "a file").unwrap();
    std::fs::write(dir.path().join("mail"), "a file").unwrap();
    let f = in_dir(dir.path(), "").preflight(now);
    assert_eq!(finding_keys(&f.errors), ["spool.dir", "delivery.maildir"]);
    assert!(
        f.errors[0]
            .problem
            .ends_with("spool: exists and is not a directory"),
        "{}",
        f.errors[0]
    );
    std::fs::remove_file(dir.path().join("mail")).unwrap();
    std::fs::create_dir(dir.path().join("mail")).unwrap();
    // A default control socket goes with the spool; one elsewhere needs its directory, and
    // nothing but a socket may sit at its path.
    std::fs::remove_file(dir.path().join("spool")).unwrap();
    let socket = dir.path().join("no-such-dir/control.sock");
    let f = in_dir(dir.path(), &format!("\n[control]\nsocket = {socket:?}\n")).preflight(now);
    assert_eq!(finding_keys(&f.errors), ["control.socket"]);
    let taken = dir.path().join("taken");
    std::fs::write(&taken, "").unwrap();
    let f = in_dir(dir.path(), &format!("\n[control]\nsocket = {taken:?}\n")).preflight(now);
    assert_eq!(finding_keys(&f.errors), ["control.socket"]);
    assert!(f.errors[0].problem.ends_with("exists and is not a socket"));
    // A directory the server makes for the spool before it binds the socket (the embedded
    // default: ./var/control.sock beside ./var/spool) is there in time.
    let var = dir.path().join("var");
    let text = BASE
        .replace(
            "/var/spool/smtp-edge",
            &var.join("spool").display().to_string(),
        )
        .replace(
            "/var/mail/smtp-edge",
            &var.join("mail").display().to_string(),
        );
    let c = Config::from_toml_str(&format!(
        "{text}\n[control]\nsocket = {:?}\n",
        var.join("control.sock")
    ))
    .unwrap();
    assert_eq!(c.preflight(now), Findings::default());
}

#[test]
fn preflight_loads_certificates_as_serve_would() {
    let dir = tempfile::tempdir().unwrap();
    let gen = |stem: &str| {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let cert = rcgen::CertificateParams::new(vec!["mx.example.test".to_owned()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let (c, k) = (
            dir.path().join(format!("{stem}.pem")),
            dir.path().join(format!("{stem}.key")),
        );
        std::fs::write(&c, cert.pem()).unwrap();
        std::fs::write(&k, key.serialize_pem()).unwrap();
        (c, k)
    };
    let (a_cert, a_key) = gen("a");
    let (_, b_key) = gen("b");
    let tls_listener =
        "\n[[listener]]\naddr = \"127.0.0.1:2465\"\nrole = \"delivery\"\ntls = \"starttls\"\n";
    let with = |cert: &std::path::Path, key: &std::path::Path| {
        in_dir(
            dir.path(),
            &format!("{tls_listener}\n[tls]\ncert = {cert:?}\nkey = {key:?}\n"),
        )
    };
    let now = crate::clock::wall();
    assert_eq!(with(&a_cert, &a_key).preflight(now), Findings::default());

    let f = with(&a_key, &a_cert).preflight(now);
    assert_eq!(finding_keys(&f.errors), ["tls.cert"], "swapped: {f:?}");
    let f = with(&a_cert, &b_key).preflight(now);
    assert_eq!(finding_keys(&f.errors), ["tls.key"], "mismatched: {f:?}");
    assert!(
        f.errors[0]
            .problem
            .contains("does not match the certificate"),
        "{}",
        f.errors[0]
    );

    // The same good pair near its end, and past it.
    let (_, not_after) = crate::tls::validity(&a_cert).unwrap();
    let at = |secs: i64| std::time::UNIX_EPOCH + Duration::from_secs(secs as u64);
    let f = with(&a_cert, &a_key).preflight(at(not_after - 10 * 86_400));
    assert!(f.errors.is_empty(), "{f:?}");
    assert_eq!(finding_keys(&f.warnings), ["tls.cert"]);
    assert!(
        f.warnings[0].problem.ends_with("expires in 10 day(s)"),
        "{f:?}"
    );
    let f = with(&a_cert, &a_key).preflight(at(not_after + 3 * 86_400));
    assert_eq!(finding_keys(&f.errors), ["tls.cert"]);
    assert!(
        f.errors[0].problem.ends_with("expired 3 day(s) ago"),
        "{f:?}"
    );

    // Without a TLS listener, serve loads no certificate, and neither does the check.
    let plain = in_dir(
        dir.path(),
        &format!("\n[tls]\ncert = {a_key:?}\nkey = {a_cert:?}\n"),
    );
    assert_eq!(plain.preflight(now), Findings::default());
    // The self-signed directory must be usable.
    let file = dir.path().join("tls-file");
    std::fs::write(&file, "").unwrap();
    let f = in_dir(
        dir.path(),
        &format!("{tls_listener}\n[tls]\nself_signed_dir = {file:?}\n"),
    )
    .preflight(now);
    assert_eq!(finding_keys(&f.errors), ["tls.self_signed_dir"]);
}

#[test]
fn preflight_warns_of_aliases_that_lead_nowhere() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    let recipients = write("recipients", "alice@example.test\n");
    let aliases = write(
        "aliases",
        "sales@example.test: alice@example.test, ghost@example.test, far@remote.test\n",
    );
    let users = write("users", "");
    let logins = write("logins", "postmaster@example.test: bob@example.test\n");
    // `[delivery]` is in BASE already: the keys go there.
    let text = BASE
        .replace(
            "/var/spool/smtp-edge",
            &dir.path().join("spool").display().to_string(),
        )
        .replace(
            "maildir = \"/var/mail/smtp-edge\"",
            &format!(
                "maildir = {:?}\nrecipients = {recipients:?}\naliases = {aliases:?}",
                dir.path().join("mail")
            ),
        );
    let c = Config::from_toml_str(&format!(
        "{text}\n[auth]\nusers = {users:?}\naliases = {logins:?}\n"
    ))
    .unwrap();
    let f = c.preflight(crate::clock::wall());
    assert!(f.errors.is_empty(), "{f:?}");
    assert_eq!(
        f.warnings
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>(),
        [
            "auth.aliases: bob@example.test: not a user in auth.users; its aliases grant nothing",
            "delivery.aliases: sales@example.test: ghost@example.test is not a recipient here",
        ]
    );
}

#[test]
fn a_reload_that_drops_proxy_keeps_the_balancers_while_the_listener_still_takes_headers() {
    let proxied = edit(
        "role = \"delivery\"",
        "role = \"delivery\"\nproxy_protocol = true",
    );
    let running = Config::from_toml_str(&format!(
        "{proxied}\n[proxy]\ntrusted = [\"10.1.0.0/24\"]\n"
    ))
    .unwrap();
    // The operator turns PROXY off and drops its balancers in one edit: valid as a file, but
    // the listener keeps taking headers until the restart, and with no balancer left it would
    // refuse every connection.
    let mut fresh = Config::from_toml_str(BASE).unwrap();
    let restart = fresh.keep_restart_keys(&running);
    // The shield is named too: its allow list, which holds the balancers, is the running one.
    assert_eq!(restart, ["listener", "proxy.trusted", "shield"]);
    assert!(fresh.listeners[0].proxy_protocol);
    assert_eq!(fresh.proxy.trusted, running.proxy.trusted);
    assert!(fresh.proxy.is_trusted("10.1.0.9".parse().unwrap()));
    assert!(fresh.guard.covers_balancer("10.1.0.9".parse().unwrap()));
    assert!(fresh.keep_restart_keys(&running).is_empty());

    // Balancers changed while the listener stays as it is: applied (only their place in the
    // shield's allow list waits for the restart).
    let mut moved = Config::from_toml_str(&format!(
        "{proxied}\n[proxy]\ntrusted = [\"10.2.0.0/24\"]\n"
    ))
    .unwrap();
    assert_eq!(moved.keep_restart_keys(&running), ["shield"]);
    assert!(moved.proxy.is_trusted("10.2.0.9".parse().unwrap()));
    assert!(!moved.proxy.is_trusted("10.1.0.9".parse().unwrap()));
}
