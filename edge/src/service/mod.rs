//! Running as a system service: dropping root once everything privileged is open
//! ([`privileges`]) and telling systemd how the server is doing ([`notify`]).

pub mod notify;
pub mod privileges;
