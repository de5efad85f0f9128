//! Starting the relay thread, and the handle the queue submits attempts through.

use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

use crate::transport;

use super::dispatch::Shared;
use super::resolve::Resolver;
use super::{Attempt, RelayConfig, Report};

/// Submission entries of the relay thread's ring.
const RING_ENTRIES: u32 = 256;

enum Command {
    Submit(Vec<Attempt>),
    Reconfigure(Arc<RelayConfig>),
    Shutdown(Duration),
}

/// The relay: one thread with its own io_uring runtime, so network delivery never runs on
/// (or slows) the intake workers.
#[derive(Debug)]
pub struct Relay;

impl Relay {
    /// Starts the relay thread. Each [`Attempt`] submitted through the returned handle gets
    /// exactly one [`AttemptResult`](super::AttemptResult) on `results`. Fails if the thread, its ring or the TLS
    /// client configuration cannot be set up. Without `dns.nameservers` the system resolver
    /// is used; if it has no configuration, MX lookups defer (and a warning says why).
    pub fn start(cfg: Arc<RelayConfig>, results: impl Report) -> std::io::Result<RelayHandle> {
        let results: Box<dyn Report> = Box::new(results);
        let (tx, rx) = unbounded_channel();
        let (up_tx, up_rx) = std::sync::mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("relay".into())
            .spawn(move || {
                transport::run(RING_ENTRIES, async move {
                    let resolver = Resolver::new(&cfg.nameservers);
                    let tls = match super::tls::client_config() {
                        Ok(tls) => tls,
                        Err(e) => {
                            let _ = up_tx.send(Err(format!("tls client: {e}")));
                            return;
                        }
                    };
                    let _ = up_tx.send(Ok(()));
                    let shared = Rc::new(Shared::new(cfg, results, resolver, tls));
                    serve(shared, rx).await;
                });
            })?;
        match up_rx.recv() {
            Ok(Ok(())) => Ok(RelayHandle {
                tx,
                thread: Arc::new(Mutex::new(Some(thread))),
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(std::io::Error::other(format!("relay: {e}")))
            }
            Err(_) => {
                let _ = thread.join();
                Err(std::io::Error::other(
                    "relay: the thread ended while starting",
                ))
            }
        }
    }
}

async fn serve(shared: Rc<Shared>, mut rx: UnboundedReceiver<Command>) {
    let grace = loop {
        match rx.recv().await {
            Some(Command::Submit(attempts)) => {
                for attempt in attempts {
                    shared.submit(attempt);
                }
            }
            Some(Command::Reconfigure(cfg)) => shared.reconfigure(cfg),
            Some(Command::Shutdown(grace)) => break grace,
            // Every handle dropped: nothing more can come; finish what is in hand.
            None => break Duration::MAX,
        }
    };
    shared.defer_waiting();
    let drained = async {
        while !shared.is_idle() {
            shared.idle.notified().await;
        }
    };
    let _ = tokio::time::timeout(grace, drained).await;
    shared.defer_outstanding();
}

/// Submits attempts to the relay thread; cheap to clone and usable from any thread.
#[derive(Debug, Clone)]
pub struct RelayHandle {
    tx: UnboundedSender<Command>,
    thread: Arc<Mutex<Option<JoinHandle<()>>>>,
}

impl RelayHandle {
    /// Hands `attempt` to the relay; returns at once. Its [`AttemptResult`](super::AttemptResult) comes on the
    /// results channel. Tokens of attempts in flight at the same time must differ. Gives the
    /// attempt back if the relay has stopped.
    pub fn submit(&self, attempt: Attempt) -> Result<(), Box<Attempt>> {
        // What comes back is what was sent: this one attempt.
        self.submit_all(vec![attempt])
            .map_err(|mut back| Box::new(back.swap_remove(0)))
    }

    /// [`RelayHandle::submit`] for several attempts at once: the relay thread is woken once
    /// for all of them. Gives them back if the relay has stopped.
    pub fn submit_all(&self, attempts: Vec<Attempt>) -> Result<(), Vec<Attempt>> {
        self.tx
            .send(Command::Submit(attempts))
            .map_err(|e| match e.0 {
                Command::Submit(attempts) => attempts,
                // The command that failed to send is the one just built.
                Command::Reconfigure(_) | Command::Shutdown(_) => unreachable!("sent a Submit"),
            })
    }

    /// Takes a reload's `cfg` for connections opened from now on (routes, TLS policy, the
    /// smarthost's credentials, connections per destination, the MX port). The resolver
    /// keeps the nameservers it started with; sessions in progress keep their settings.
    pub fn reconfigure(&self, cfg: Arc<RelayConfig>) {
        if self.tx.send(Command::Reconfigure(cfg)).is_err() {
            tracing::error!("relay thread gone; its settings are not reloaded");
        }
    }

    /// Stops the relay: attempts not yet started are deferred at once, sessions in progress
    /// get `grace` to finish (their results come as usual), then whatever is left is
    /// deferred and the thread ends. Returns when it has; later calls return at once.
    pub fn shutdown(&self, grace: Duration) {
        let _ = self.tx.send(Command::Shutdown(grace));
        let thread = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(thread) = thread {
            let _ = thread.join();
        }
    }
}
