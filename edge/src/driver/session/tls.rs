//! A session's TLS layer: the sans-IO pump, the deadline its handshake must meet
//! (`tls.handshake_timeout_secs`), and what the handshake settled.

use std::time::{Duration, Instant};

use crate::spool::TlsTrace;
use crate::tls::{TlsContext, TlsError, TlsPump};

/// The pump of one session and its handshake's state.
pub(super) struct SessionTls {
    pump: TlsPump,
    /// When the handshake must be over; `None` once it is.
    handshake_deadline: Option<Instant>,
    /// What the handshake settled, for the trace header.
    trace: Option<TlsTrace>,
}

/// What one [`SessionTls::feed`] did.
pub(super) struct Fed {
    /// Ciphertext octets consumed.
    pub(super) used: usize,
    /// The TLS version, when this input completed the handshake.
    pub(super) handshake_done: Option<&'static str>,
    /// The peer sent `close_notify`: nothing more will be decrypted.
    pub(super) peer_closed: bool,
}

impl SessionTls {
    /// A server session whose handshake must be over `timeout` after `now`.
    pub(super) fn start(
        ctx: &TlsContext,
        now: Instant,
        timeout: Duration,
    ) -> Result<SessionTls, TlsError> {
        Ok(SessionTls {
            pump: ctx.pump()?,
            handshake_deadline: Some(now + timeout),
            trace: None,
        })
    }

    /// When the handshake must be over, while it is not.
    pub(super) fn deadline(&self) -> Option<Instant> {
        self.handshake_deadline
    }

    /// Whether the handshake is still under way.
    pub(super) fn is_handshaking(&self) -> bool {
        self.pump.is_handshaking()
    }

    /// The version and cipher, once the handshake is over.
    pub(super) fn trace(&self) -> Option<&TlsTrace> {
        self.trace.as_ref()
    }

    /// Decrypts `cipher` into `plain`; records to send go to `wire`.
    pub(super) fn feed(
        &mut self,
        cipher: &[u8],
        plain: &mut Vec<u8>,
        wire: &mut Vec<u8>,
    ) -> Result<Fed, TlsError> {
        let was_handshaking = self.pump.is_handshaking();
        let used = self.pump.feed(cipher, plain, wire)?;
        let mut handshake_done = None;
        if was_handshaking && !self.pump.is_handshaking() {
            self.handshake_deadline = None;
            if let Some(info) = self.pump.info() {
                handshake_done = Some(info.version);
                self.trace = Some(TlsTrace {
                    version: info.version.to_owned(),
                    cipher: info.cipher.to_owned(),
                });
            }
        }
        Ok(Fed {
            used,
            handshake_done,
            peer_closed: self.pump.peer_closed(),
        })
    }

    /// Encrypts replies into records appended to `wire`.
    pub(super) fn seal(&mut self, plain: &[u8], wire: &mut Vec<u8>) -> Result<(), TlsError> {
        self.pump.seal(plain, wire)
    }

    /// Appends `close_notify` to `wire`.
    pub(super) fn close(&mut self, wire: &mut Vec<u8>) {
        self.pump.close(wire);
    }
}
