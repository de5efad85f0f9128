//! One connection on a worker: the thin loop between the ring and the engine.
//!
//! Receive into an owned buffer, feed the engine with the current time, act on its events
//! (spool writes), send its replies. The engine decides everything else.

use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;

use tokio::sync::watch;

use super::clock;
use super::worker::WorkerCtx;
use crate::metrics::RejectReason;
use crate::protocol::{CloseReason, Connection, EngineConfig, Event, Rejection, SpoolFault, TxnId};
use crate::spool::{Incoming, SpoolError, TraceInfo};
use crate::transport::Stream;

/// The message being received, and whether its spool entry is still healthy.
struct InFlight {
    txn: TxnId,
    entry: Result<Incoming, SpoolError>,
}

/// What the per-session log line reports.
struct Summary {
    helo: String,
    outcome: &'static str,
    queue_ids: Vec<String>,
    rejected: u32,
}

/// Serves one connection until it closes.
pub(super) async fn serve(
    ctx: Rc<WorkerCtx>,
    stream: Stream,
    peer: SocketAddr,
    engine: Arc<EngineConfig>,
    mut shutdown: watch::Receiver<bool>,
) {
    let metrics = ctx.metrics();
    let mut conn = Connection::new(engine, clock::now());
    let mut summary = Summary {
        helo: String::new(),
        outcome: "disconnected",
        queue_ids: Vec::new(),
        rejected: 0,
    };
    let mut in_flight: Option<InFlight> = None;
    let mut out = Vec::with_capacity(512);
    let mut buf = ctx.buffers.take();
    let mut stopping = *shutdown.borrow_and_update();
    if stopping {
        conn.handle_shutdown();
    }
    'session: loop {
        // Replies first: the client waits for them before it sends more (RFC 2920 §3.1).
        if conn.poll_transmit(&mut out) {
            let (res, emptied) = stream.send_all(out).await;
            out = emptied;
            if res.is_err() {
                break;
            }
        }
        if conn.is_closed() {
            stream.shutdown();
            break;
        }
        let read = stream.recv(buf);
        tokio::pin!(read);
        let (res, filled) = loop {
            let deadline = conn.poll_timeout().map(tokio::time::Instant::from_std);
            tokio::select! {
                r = &mut read => break r,
                _ = sleep_until(deadline) => {
                    conn.handle_timeout(clock::now());
                }
                // A dropped sender also means the server is going away.
                _ = shutdown.changed(), if !stopping => {
                    stopping = true;
                    conn.handle_shutdown();
                }
            }
            drain_events(&ctx, peer, &mut conn, &mut in_flight, &mut summary).await;
            if conn.is_closed() {
                // Timeout or shutdown: say why, then go. The read in flight is cancelled.
                if conn.poll_transmit(&mut out) {
                    let _ = stream.send_all(std::mem::take(&mut out)).await;
                }
                stream.shutdown();
                break 'session;
            }
        };
        buf = filled;
        let n = match res {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        metrics.bytes_received(n as u64);
        let mut input = buf.filled();
        while !input.is_empty() {
            let used = conn.handle_input(clock::now(), input);
            input = input.get(used..).unwrap_or_default();
            drain_events(&ctx, peer, &mut conn, &mut in_flight, &mut summary).await;
            if conn.is_closed() {
                // Input after QUIT, or after a 421, is never read.
                break;
            }
        }
    }
    if let Some(InFlight {
        entry: Ok(entry), ..
    }) = in_flight.take()
    {
        entry.abort().await;
    }
    summary.helo = conn.helo().unwrap_or_default().to_owned();
    tracing::info!(
        %peer,
        helo = %summary.helo,
        outcome = summary.outcome,
        queued = %summary.queue_ids.join(","),
        rejected = summary.rejected,
        "session"
    );
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Acts on every event the engine has queued, in order.
async fn drain_events(
    ctx: &Rc<WorkerCtx>,
    peer: SocketAddr,
    conn: &mut Connection,
    in_flight: &mut Option<InFlight>,
    summary: &mut Summary,
) {
    let metrics = ctx.metrics();
    while let Some(event) = conn.poll_event() {
        match event {
            Event::MessageStart { txn, envelope } => {
                let trace = TraceInfo {
                    peer,
                    helo: envelope.helo.clone(),
                    greeting: envelope.greeting,
                    smtputf8: envelope.smtputf8,
                    hostname: ctx.hostname.clone(),
                    received_at: clock::wall(),
                    tls: None,
                };
                let entry = ctx.spool.begin(&envelope, &trace).await;
                if let Err(e) = &entry {
                    tracing::error!(error = %e, "spool: cannot start a message");
                }
                *in_flight = Some(InFlight { txn, entry });
            }
            Event::MessageData { txn, data } => {
                let entry = match in_flight {
                    Some(f) if f.txn == txn => &mut f.entry,
                    _ => {
                        conn.recycle(data);
                        continue;
                    }
                };
                let Ok(incoming) = entry else {
                    // The entry already failed: the content is dropped, the end gets 451.
                    conn.recycle(data);
                    continue;
                };
                let (res, emptied) = incoming.append(data).await;
                conn.recycle(emptied);
                if let Err(e) = res {
                    tracing::error!(error = %e, "spool: write failed");
                    if let Ok(failed) = std::mem::replace(entry, Err(e)) {
                        failed.abort().await;
                    }
                }
            }
            Event::MessageEnd { txn } => {
                let verdict = match in_flight.take() {
                    Some(InFlight {
                        txn: t,
                        entry: Ok(incoming),
                    }) if t == txn => incoming.commit().await,
                    Some(InFlight { entry: Err(e), .. }) => Err(e),
                    _ => {
                        tracing::error!("spool: message end without a spool entry");
                        conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
                        continue;
                    }
                };
                match verdict {
                    Ok((id, fsync)) => {
                        metrics.observe_fsync(fsync);
                        metrics.message_accepted();
                        conn.handle_spooled(clock::now(), txn, Ok(id.as_str()));
                        summary.queue_ids.push(id.to_string());
                        ctx.delivery.enqueue(id);
                    }
                    Err(e) => {
                        tracing::error!(error = %e, "spool: commit failed; replying 451");
                        metrics.message_rejected(RejectReason::SpoolFailure);
                        conn.handle_spooled(clock::now(), txn, Err(SpoolFault));
                    }
                }
            }
            Event::MessageAbort { txn, reason } => {
                if let Some(InFlight { txn: t, entry }) = in_flight.take() {
                    if let (true, Ok(incoming)) = (t == txn, entry) {
                        incoming.abort().await;
                    }
                }
                if let Some(r) = reason {
                    summary.rejected += 1;
                    metrics.message_rejected(reject_reason(r));
                }
            }
            Event::StartTls => {
                // The engine offers STARTTLS only where the listener has TLS configured.
                tracing::error!("STARTTLS accepted on a listener without TLS");
            }
            Event::Rejected(r) => {
                summary.rejected += 1;
                metrics.message_rejected(reject_reason(r));
            }
            Event::Close(reason) => {
                summary.outcome = match reason {
                    CloseReason::Quit => "quit",
                    CloseReason::Timeout => "timeout",
                    CloseReason::TooManyErrors => "too many errors",
                    CloseReason::Shutdown => "shutdown",
                };
            }
        }
    }
}

fn reject_reason(r: Rejection) -> RejectReason {
    match r {
        Rejection::RelayDenied => RejectReason::RelayDenied,
        Rejection::UnknownRecipient => RejectReason::UnknownRecipient,
        Rejection::TooManyRecipients => RejectReason::TooManyRecipients,
        Rejection::MessageTooLarge => RejectReason::MessageTooLarge,
        Rejection::BareNewline => RejectReason::BareNewline,
        Rejection::LineTooLong => RejectReason::LineTooLong,
        Rejection::NotAuthenticated => RejectReason::NotAuthenticated,
    }
}
