//! The SMTP/LMTP client engine (`protocol::client`) against real receivers nobody here wrote:
//! Python's aiosmtpd, Postfix's smtp-sink and Dovecot's LMTP server, each started by the test
//! on a loopback port, driven over a plain blocking `TcpStream` by [`driver::deliver`].
//!
//! Run: `cargo test -p smtp-edge --test peers` (needs `python3` with `aiosmtpd`, `smtp-sink`
//! from Debian's `postfix`, and `dovecot` from `dovecot-lmtpd`; `cargo xtask test` installs them).

// Real processes and sockets: every wait here has a wall-clock deadline.
#![allow(clippy::disallowed_methods)]

mod driver;
mod receivers;

mod aiosmtpd;
mod dovecot;
mod smtp_sink;

/// Content that trips a careless dot-stuffer, in lines well under 998 octets.
pub fn dotted_content() -> Vec<u8> {
    let mut body =
        b"From: a@example.test\r\nSubject: dots\r\n\r\n.\r\n..\r\n.hidden\r\nmiddle.\r\n. \r\n"
            .to_vec();
    for i in 0..2000 {
        body.extend_from_slice(format!(".line {i} .......\r\nplain line {i}\r\n").as_bytes());
    }
    body.extend_from_slice(b"last line\r\n");
    body
}
