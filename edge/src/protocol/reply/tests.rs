#![allow(clippy::unwrap_used, clippy::indexing_slicing)]

use super::*;

fn wire(r: &Reply) -> String {
    let mut out = Vec::new();
    r.write(&mut out);
    String::from_utf8(out).unwrap()
}

/// Every kind as a client reads it: code, enhanced status (RFC 2034 §3) and text.
#[test]
fn each_kind_renders_its_code_and_status() {
    let host = "mx.example.test";
    let table: &[(Reply, &str)] = &[
        (
            Reply::help(),
            "214 2.0.0 Commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP VRFY HELP QUIT",
        ),
        (Reply::greeting(host), "220 mx.example.test ESMTP smtp-edge"),
        (Reply::ready_for_tls(), "220 2.0.0 Ready to start TLS"),
        (Reply::bye(host), "221 2.0.0 mx.example.test Bye"),
        (
            Reply::auth_succeeded(),
            "235 2.7.0 Authentication successful",
        ),
        (Reply::ok(), "250 2.0.0 Ok"),
        (Reply::queued("Q1"), "250 2.0.0 Ok: queued as Q1"),
        (Reply::chunk_received(42), "250 2.0.0 42 octets received"),
        (Reply::sender_ok(), "250 2.1.0 Sender ok"),
        (Reply::recipient_ok(), "250 2.1.5 Recipient ok"),
        (
            Reply::cannot_verify(),
            "252 2.5.0 Cannot VRFY user, but will accept message and attempt delivery",
        ),
        (Reply::auth_challenge("VXNlcm5hbWU6"), "334 VXNlcm5hbWU6"),
        (Reply::start_data(), "354 End data with <CR><LF>.<CR><LF>"),
        (
            Reply::service_closing(host, Closing::Timeout),
            "421 4.4.2 mx.example.test Timeout waiting for client input",
        ),
        (
            Reply::service_closing(host, Closing::Shutdown),
            "421 4.3.2 mx.example.test Service shutting down",
        ),
        (
            Reply::service_closing(host, Closing::TooManyErrors),
            "421 4.7.0 mx.example.test Too many errors; closing",
        ),
        (
            Reply::service_closing(host, Closing::Blocked),
            "421 4.7.0 mx.example.test Your address is temporarily blocked; try again later",
        ),
        (
            Reply::service_closing(host, Closing::TooManyConnections),
            "421 4.7.0 mx.example.test Too many connections from your address; try again later",
        ),
        (
            Reply::service_closing(host, Closing::ServerFull),
            "421 4.3.2 mx.example.test Too many connections; try again later",
        ),
        (
            Reply::storage_failed(),
            "451 4.3.0 Temporary failure storing the message; try again later",
        ),
        (
            Reply::too_many_recipients(),
            "452 4.5.3 Too many recipients",
        ),
        (
            Reply::auth_unavailable(),
            "454 4.7.0 Temporary authentication failure",
        ),
        (
            Reply::unrecognized("Command unrecognized"),
            "500 5.5.2 Command unrecognized",
        ),
        (Reply::syntax("NOOP"), "501 5.5.4 Syntax: NOOP"),
        (
            Reply::bad_argument("BODY must be 7BIT or 8BITMIME"),
            "501 5.5.4 BODY must be 7BIT or 8BITMIME",
        ),
        (
            Reply::bad_sender("Bad sender address syntax"),
            "501 5.1.7 Bad sender address syntax",
        ),
        (
            Reply::bad_recipient("Bad recipient address syntax"),
            "501 5.1.3 Bad recipient address syntax",
        ),
        (
            Reply::auth_cancelled(),
            "501 5.7.0 Authentication cancelled",
        ),
        (Reply::bad_base64(), "501 5.5.2 Invalid base64 data"),
        (
            Reply::not_available("EXPN not available"),
            "502 5.5.1 EXPN not available",
        ),
        (
            Reply::bad_sequence("Need MAIL command first"),
            "503 5.5.1 Need MAIL command first",
        ),
        (
            Reply::unknown_mechanism(),
            "504 5.5.4 Unrecognized authentication type",
        ),
        (
            Reply::tls_required(),
            "530 5.7.0 Must issue a STARTTLS command first",
        ),
        (Reply::auth_required(), "530 5.7.0 Authentication required"),
        (
            Reply::auth_invalid(),
            "535 5.7.8 Authentication credentials invalid",
        ),
        (
            Reply::encryption_required(),
            "538 5.7.11 Encryption required for requested authentication mechanism",
        ),
        (Reply::relay_denied(), "550 5.7.1 Relay access denied"),
        (
            Reply::unknown_user(),
            "550 5.1.1 Mailbox unavailable: no such user here",
        ),
        (Reply::empty_local_part(), "550 5.1.3 Empty local part"),
        (
            Reply::content_refused("Message refused"),
            "550 5.6.0 Message refused",
        ),
        (
            Reply::too_large(),
            "552 5.3.4 Message size exceeds fixed maximum message size",
        ),
        (
            Reply::null_sender_refused(),
            "553 5.7.1 Null sender not allowed on submission",
        ),
        (
            Reply::sender_not_owned("alice"),
            "553 5.7.1 Sender address not owned by user alice",
        ),
        (
            Reply::needs_smtputf8(),
            "553 5.6.7 Non-ASCII address needs the SMTPUTF8 parameter",
        ),
        (
            Reply::no_valid_recipients(),
            "554 5.5.1 No valid recipients",
        ),
        (
            Reply::pregreet(host),
            "554 5.5.1 mx.example.test Protocol error: talked before the greeting",
        ),
        (
            Reply::unsupported_parameter(),
            "555 5.5.4 Unsupported parameter",
        ),
    ];
    for (reply, expected) in table {
        assert_eq!(wire(reply), format!("{expected}\r\n"));
        assert_eq!(reply.to_string(), *expected);
    }
}

#[test]
fn multiline_marks_continuations() {
    let r = Reply::ehlo(vec!["host".into(), "PIPELINING".into(), "HELP".into()]);
    assert_eq!(wire(&r), "250-host\r\n250-PIPELINING\r\n250 HELP\r\n");
}

#[test]
fn negative_replies_are_told_apart_from_positive_ones() {
    assert!(Reply::ok().code().is_positive());
    assert!(Reply::start_data().code().is_positive());
    assert!(!Reply::auth_unavailable().code().is_positive());
    assert_eq!(Reply::relay_denied().code().get(), 550);
    assert_eq!(
        Reply::encryption_required()
            .status()
            .map(|s| (s.class(), s.subject_detail())),
        Some((5, (7, 11)))
    );
}
