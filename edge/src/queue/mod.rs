//! The queue: every accepted message, what has become of each of its recipients, and the
//! scheduler that attempts them when they are due.
//!
//! ```text
//!  worker ── enqueue(qid) ──► scheduler thread ◄── list/show/flush/delete/bounce (control)
//!                               │  timers: (next attempt, qid), earliest first
//!                               ├─► Maildir (batched syncfs)      local domains
//!                               └─► relay (network)               other domains, next hops
//!                               results ─► Record (state/<qid>) ─► DSN for failures ─► queue
//! ```
//!
//! - [`store`]: [`Store`], the storage of messages and records; the only code that knows the
//!   layout on disk.
//! - [`record`]: [`Record`], the per-recipient state (pending, delivered, deferred with attempt
//!   count, last reply and next attempt time, failed) and the [`RetryPolicy`].
//! - [`dsn`]: the delivery status notification for failed recipients.
//! - [`cli`]: `smtp-edge queue ...`, through the control socket (the operator's [`Request`]s
//!   reach the scheduler from the control thread and are answered between rounds).
//!
//! A message's recipients are rewritten ([`crate::rewrite`]: aliases, catch-alls, `+tag`) when
//! it is first attempted; its record keeps the final addresses, each with the original one.
//!
//! **The scheduler** is one thread with blocking `std::fs`, off the io_uring rings. It keeps
//! one timer per message (its earliest due recipient) and sleeps until the earliest, or until a
//! command arrives; each round attempts every message that is due, new or retried alike, so a
//! steady stream of new mail never postpones a retry. A round delivers its Maildir recipients
//! together (one pair of `syncfs` for the whole batch, see [`crate::delivery`]) and hands its
//! network recipients (`relay.local` other than `maildir`, and `relay.remote`) to the relay,
//! one [`crate::relay::Attempt`] per route (per recipient domain for MX); it records the
//! outcome of every recipient and writes the notices for those that failed once every result
//! of the message is in. A message with relay attempts in progress is not attempted again,
//! deleted or bounced meanwhile: the relay is reading its file.
//!
//! **Never lost, never twice.** A message enters the queue already durable (the spool's
//! commit). A recipient is recorded as delivered only after its delivery is durable; a crash
//! before the record is written redoes the attempt, which for a Maildir finds the entry (its
//! name is the queue id and mailbox) and skips it; a next hop may get the message again (at
//! least once, as with every MTA: the 250 and our record cannot be one atomic step). A record
//! is replaced whole. A notice is
//! queued (durably) before the failure is recorded as reported, so a crash can repeat a notice,
//! never drop one.
//!
//! **Retries.** A temporary failure (4xx, a timeout, a lost connection, a full disk) defers the
//! recipient for `relay.retry_secs[attempts - 1]` (the last step repeating); once the message is
//! older than `relay.max_age_secs`, or on a permanent failure (5xx), the recipient fails and its
//! sender gets one report per message and attempt (none for the null sender `<>`).
//!
//! **Logging.** One INFO line per recipient per attempt, the way Postfix operators read
//! them: `<qid>: from=<...>, to=<...>, relay=..., delay=..., tls=..., status=sent (reply)`.

pub mod cli;
mod dsn;
pub mod record;
mod store;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::clock;
use crate::delivery::{Maildir, MaildirError, MaildirJob, RcptResult, MAX_BATCH};
use crate::metrics::Metrics;
use crate::protocol::address::parse_mailbox;
use crate::protocol::{Domain, Envelope, Mailbox};
use crate::relay::{
    Attempt as RelayAttempt, AttemptResult, RcptOutcome, RelayHandle, Report, Route as RelayRoute,
    Verdict, Via,
};
use crate::rewrite::SharedRewriter;
use crate::spool::log::{Placed, SegmentName};
pub use crate::spool::QueueId;
use crate::spool::{Queued, Shape, SpoolError};

pub use record::{Recipient, Record, RetryPolicy, State};
pub use store::Store;

/// What the queue needs to run.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// The spool directory (`spool.dir`), prepared and locked.
    pub spool_dir: PathBuf,
    /// This run's generation (`spool::next_generation`): the ids of the notices.
    pub generation: u64,
    /// Our host name: log lines, and the sender of notices (`MAILER-DAEMON@hostname`).
    pub hostname: String,
    /// Our domains (lower-cased): their recipients go to the Maildir.
    pub local_domains: HashSet<String>,
    /// The Maildir root.
    pub maildir: PathBuf,
    /// Permission bits of Maildir entries (`delivery.mode`).
    pub maildir_mode: u32,
    /// When to retry, when to give up.
    pub retry: RetryPolicy,
    /// `relay.local` and `relay.remote`: where recipients in and outside our domains go.
    pub routes: (RelayRoute, RelayRoute),
    /// Aliases, catch-alls and tags: applied when a message is first attempted.
    pub rewrite: Arc<SharedRewriter>,
}

/// Why the queue could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum QueueError {
    /// Opening the store failed.
    #[error(transparent)]
    Spool(#[from] SpoolError),
    /// The Maildir root is unusable.
    #[error(transparent)]
    Maildir(#[from] MaildirError),
    /// The thread could not be spawned.
    #[error("spawning the queue thread: {0}")]
    Spawn(#[source] std::io::Error),
}

/// An operator's request (`smtp-edge queue ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Every queued message.
    List,
    /// One message.
    Show(QueueId),
    /// Attempt one message, or all, now: deferred recipients too.
    Flush(Option<QueueId>),
    /// Remove a message without a notice.
    Delete(QueueId),
    /// Fail every recipient not yet delivered, and notify the sender.
    Bounce(QueueId),
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// To `List`: oldest first.
    List(Vec<MessageInfo>),
    /// To `Show`.
    Show(MessageInfo),
    /// To `Flush`, `Delete` and `Bounce`: how many messages it concerned.
    Done(usize),
    /// The request could not be carried out: why.
    Error(String),
}

/// One queued message, as `queue list` and `queue show` print it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageInfo {
    /// Its queue id.
    pub id: String,
    /// The envelope sender; empty for `<>`.
    pub from: String,
    /// Its size in octets.
    pub size: u64,
    /// When it arrived, in seconds since the Unix epoch.
    pub arrival: u64,
    /// `active` (some recipient never attempted) or `deferred`.
    pub state: String,
    /// Each recipient's state.
    pub recipients: Vec<Recipient>,
}

enum Command {
    /// A message committed by a worker: in the log, or (`None`) in `queue/`; with its
    /// envelope and shape when the worker gave them.
    Enqueue(QueueId, Option<Placed>, Option<Box<(Envelope, Shape)>>),
    /// A worker sealed a log segment holding this many messages.
    Sealed(SegmentName, u64),
    Control(Request, mpsc::Sender<Answer>),
    /// The relay's verdicts on one attempt (sent by it through [`RelayReports`]).
    Relayed(AttemptResult),
    /// A reload's settings, for the next attempt.
    Reconfigure(Box<QueueConfig>),
    Shutdown,
}

/// The relay as the queue uses it: where attempts go, and how long attempts in progress may
/// take to finish at shutdown. Results come back through [`Inbox::reports`].
#[derive(Debug)]
pub struct RelayLink {
    /// Takes attempts.
    pub handle: RelayHandle,
    /// At shutdown, how long sessions in progress get before the rest is deferred.
    pub grace: Duration,
}

/// The scheduler's command channel, made before the relay starts (the relay needs somewhere to
/// report to, and the queue needs the relay's handle to start).
pub struct Inbox {
    tx: mpsc::Sender<Command>,
    rx: mpsc::Receiver<Command>,
}

impl Inbox {
    /// An empty inbox.
    #[allow(clippy::new_without_default)]
    pub fn new() -> Inbox {
        let (tx, rx) = mpsc::channel();
        Inbox { tx, rx }
    }

    /// What the relay reports to ([`crate::relay::Relay::start`]): each result lands in the
    /// scheduler's own channel.
    pub fn reports(&self) -> RelayReports {
        RelayReports(self.tx.clone())
    }
}

/// The relay's [`Report`] into the scheduler's inbox.
#[derive(Debug)]
pub struct RelayReports(mpsc::Sender<Command>);

impl Report for RelayReports {
    fn report(&self, result: AttemptResult) {
        // The queue gone (shutting down) has nobody left to tell.
        let _ = self.0.send(Command::Relayed(result));
    }
}

/// Hands committed messages and operator requests to the scheduler. Cheap to clone; `Send`.
///
/// Dropping the last handle lets the thread finish the round in progress and joins it; so
/// does [`QueueHandle::shutdown`].
#[derive(Clone)]
pub struct QueueHandle {
    // Field order matters: `tx` drops before `thread`, so when the last handle goes the thread
    // sees the channel close before `Joiner::drop` waits for it.
    tx: mpsc::Sender<Command>,
    thread: Arc<Joiner>,
}

impl std::fmt::Debug for QueueHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QueueHandle").finish_non_exhaustive()
    }
}

struct Joiner(Mutex<Option<JoinHandle<()>>>);

impl Joiner {
    fn join(&self) {
        let handle = self.0.lock().map(|mut h| h.take()).unwrap_or(None);
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("queue thread panicked");
            }
        }
    }
}

impl Drop for Joiner {
    fn drop(&mut self) {
        self.join();
    }
}

impl QueueHandle {
    /// Queues a committed message for its first attempt. Never blocks. If the thread is gone
    /// the message stays on disk and is attempted at the next start.
    pub fn enqueue(&self, id: QueueId) {
        if self.tx.send(Command::Enqueue(id, None, None)).is_err() {
            tracing::error!(%id, "queue thread gone; message stays queued until restart");
        }
    }

    /// Queues a message committed into the spool log at `placed`. Never blocks.
    pub fn enqueue_logged(&self, id: QueueId, placed: Placed) {
        if self
            .tx
            .send(Command::Enqueue(id, Some(placed), None))
            .is_err()
        {
            tracing::error!(%id, "queue thread gone; message stays queued until restart");
        }
    }

    /// [`QueueHandle::enqueue_logged`] with what the committing worker knows of the message:
    /// its first attempt, if it goes to the relay, needs no read of the log (the relay reads the
    /// content from the segment itself). Never blocks.
    pub fn enqueue_described(&self, id: QueueId, placed: Placed, envelope: Envelope, shape: Shape) {
        let described = Some(Box::new((envelope, shape)));
        if self
            .tx
            .send(Command::Enqueue(id, Some(placed), described))
            .is_err()
        {
            tracing::error!(%id, "queue thread gone; message stays queued until restart");
        }
    }

    /// A worker is done with log segment `segment`, which holds `messages` messages: the queue
    /// deletes it once that many are done. Never blocks.
    pub fn sealed(&self, segment: SegmentName, messages: u64) {
        // If the thread is gone, the next start compacts the segment.
        let _ = self.tx.send(Command::Sealed(segment, messages));
    }

    /// Carries out an operator's request and waits for the answer (blocking: the control
    /// thread's side, never a ring's).
    pub fn request(&self, request: Request) -> Answer {
        let (tx, rx) = mpsc::channel();
        if self.tx.send(Command::Control(request, tx)).is_err() {
            return Answer::Error("the queue is shutting down".into());
        }
        rx.recv()
            .unwrap_or_else(|_| Answer::Error("the queue is shutting down".into()))
    }

    /// Takes a reload's `cfg` from the next attempt on: `hostname`, `local_domains`, the
    /// retry policy, the routes and the rewriting. What the queue opened at start (the spool,
    /// its generation, the Maildir and its mode) stays as it is.
    pub fn reconfigure(&self, cfg: QueueConfig) {
        if self.tx.send(Command::Reconfigure(Box::new(cfg))).is_err() {
            tracing::error!("queue thread gone; its settings are not reloaded");
        }
    }

    /// Finishes the round in progress and what is due now, then stops the thread and joins it.
    pub fn shutdown(self) {
        let _ = self.tx.send(Command::Shutdown);
        self.thread.join();
    }
}

/// Opens the store (recovering what a crash left: see [`Store::open`]) and the Maildir, and
/// starts the scheduler with every queued message due at its record's time. Call it **before**
/// any worker opens a `SpoolWriter`.
///
/// Without a `relay`, recipients of network routes wait (deferred) until they are too old.
/// With one, the queue's thread must be stopped with [`QueueHandle::shutdown`] (which also
/// stops the relay): the relay's results keep the queue's channel open.
pub fn start(
    cfg: QueueConfig,
    metrics: Arc<Metrics>,
    inbox: Inbox,
    relay: Option<RelayLink>,
) -> Result<QueueHandle, QueueError> {
    let (store, backlog) = Store::open(&cfg.spool_dir, cfg.generation)?;
    let maildir = Maildir::open(&cfg.maildir, cfg.maildir_mode)?;
    let Inbox { tx, rx } = inbox;
    let (relay, relay_grace) = match relay {
        None => (None, Duration::ZERO),
        Some(link) => (Some(link.handle), link.grace),
    };
    let mut scheduler = Scheduler {
        cfg,
        store,
        maildir,
        metrics,
        timers: BTreeSet::new(),
        entries: HashMap::new(),
        forced: HashSet::new(),
        relay,
        relay_grace,
        next_token: 0,
        flights: HashMap::new(),
        busy: HashMap::new(),
        outbox: Vec::new(),
        described: HashMap::new(),
    };
    if !backlog.is_empty() {
        tracing::info!(messages = backlog.len(), "queue: resuming");
    }
    for id in backlog {
        let due = match scheduler.store.record(&id) {
            Ok(Some(record)) => record.next_due_ms().unwrap_or(0),
            Ok(None) => 0,
            Err(e) => {
                tracing::error!(%id, error = %e, "queue: unreadable record; attempting the message anew");
                0
            }
        };
        scheduler.schedule(id, due, true);
    }
    let handle = std::thread::Builder::new()
        .name("smtp-edge-queue".into())
        .spawn(move || scheduler.run(&rx))
        .map_err(QueueError::Spawn)?;
    Ok(QueueHandle {
        tx,
        thread: Arc::new(Joiner(Mutex::new(Some(handle)))),
    })
}

/// The reply recorded for recipients the relay could not take because it has stopped.
const RELAY_STOPPED: &str = "451 4.3.0 the relay has stopped";

/// How long a done mark may wait, written but not synced, for others to share its
/// `fdatasync`. A crash within it loses only marks: those messages are delivered again after
/// the restart (the at-least-once of every MTA), never lost.
const DONE_SYNC_DELAY: Duration = Duration::from_millis(100);

/// The wall clock in ms since the Unix epoch: next-attempt times outlive the process.
fn now_ms() -> u64 {
    clock::wall()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// A queued message the scheduler knows of.
struct Entry {
    /// When it is due, ms since the epoch; its key in `timers`.
    due_ms: u64,
    /// Whether an earlier attempt (or an earlier run) may have delivered some of it.
    resumed: bool,
    /// `active` or `deferred`, for the gauge.
    deferred: bool,
}

struct Scheduler {
    cfg: QueueConfig,
    store: Store,
    maildir: Maildir,
    metrics: Arc<Metrics>,
    timers: BTreeSet<(u64, QueueId)>,
    entries: HashMap<QueueId, Entry>,
    /// Messages flushed by the operator: their deferred recipients are due now.
    forced: HashSet<QueueId>,
    relay: Option<RelayHandle>,
    relay_grace: Duration,
    /// The token of the next relay attempt.
    next_token: u64,
    /// Relay attempts in progress, by token: whose, and which of its recipients.
    flights: HashMap<u64, Flight>,
    /// Messages with relay attempts in progress: not due again, nor deleted, until every
    /// result is in (the relay reads their file meanwhile).
    busy: HashMap<QueueId, Busy>,
    /// Network attempts of the batch in hand, for [`Scheduler::send_outbox`].
    outbox: Vec<RelayAttempt>,
    /// Envelope and shape of messages not attempted yet, from the workers that committed them:
    /// their first attempt need not read them back unless a recipient is local (Maildir).
    described: HashMap<QueueId, (Envelope, Shape)>,
}

/// One relay attempt in progress.
struct Flight {
    id: QueueId,
    /// Indexes into the record's recipients, in the attempt's order.
    rcpts: Vec<usize>,
}

/// A message waiting for relay results.
struct Busy {
    attempt: Attempt,
    /// Relay attempts still to report.
    outstanding: usize,
}

/// Where one recipient goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Route {
    /// Written here, by [`crate::delivery`].
    Maildir,
    /// Over the network by the relay (`relay.local` other than `maildir`, or `relay.remote`).
    Remote(RelayRoute),
}

/// One message of a round.
struct Attempt {
    queued: Queued,
    record: Record,
    /// Indexes into `record.recipients` attempted in this round, with their route.
    due: Vec<(usize, Route)>,
}

impl Scheduler {
    fn run(mut self, rx: &mpsc::Receiver<Command>) {
        loop {
            let now = now_ms();
            let timer = self
                .timers
                .first()
                .map(|&(due, _)| Duration::from_millis(due.saturating_sub(now)));
            let sync = self
                .store
                .unsynced_for(clock::now())
                .map(|age| DONE_SYNC_DELAY.saturating_sub(age));
            let first = match timer.into_iter().chain(sync).min() {
                None => rx.recv().map_err(|_| mpsc::RecvTimeoutError::Disconnected),
                Some(wait) if wait.is_zero() => rx.try_recv().map_err(|e| match e {
                    mpsc::TryRecvError::Empty => mpsc::RecvTimeoutError::Timeout,
                    mpsc::TryRecvError::Disconnected => mpsc::RecvTimeoutError::Disconnected,
                }),
                Some(wait) => rx.recv_timeout(wait),
            };
            let mut stop = match first {
                Ok(command) => self.handle(command),
                Err(mpsc::RecvTimeoutError::Timeout) => false,
                Err(mpsc::RecvTimeoutError::Disconnected) => true,
            };
            while !stop {
                match rx.try_recv() {
                    Ok(command) => stop = self.handle(command),
                    Err(mpsc::TryRecvError::Disconnected) => stop = true,
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.round(now_ms());
            if stop {
                self.stop_relay(rx);
                self.sync_done_marks(true);
                self.publish_size();
                return;
            }
            self.sync_done_marks(false);
            self.publish_size();
        }
    }

    /// Syncs the done marks written (each when its message was done) once the oldest has
    /// waited [`DONE_SYNC_DELAY`] (or `now`): one `fdatasync` for all the passes of that time,
    /// not one per pass. Under load a pass handles a few messages, and its `fdatasync` cost
    /// more than the rest of the pass.
    fn sync_done_marks(&mut self, now: bool) {
        let due = now
            || self
                .store
                .unsynced_for(clock::now())
                .is_some_and(|age| age >= DONE_SYNC_DELAY);
        if !due {
            return;
        }
        if let Err(e) = self.store.flush() {
            // The marks are written, not yet synced: a crash may attempt those messages again.
            tracing::error!(error = %e, "queue: cannot sync done marks");
        }
    }

    /// Carries out one command; true to stop.
    fn handle(&mut self, command: Command) -> bool {
        match command {
            Command::Enqueue(id, placed, described) => {
                if let Some(placed) = placed {
                    self.store.add(id, placed);
                }
                if let Some(described) = described {
                    self.described.insert(id, *described);
                }
                self.schedule(id, 0, false);
                false
            }
            Command::Sealed(segment, messages) => {
                self.store.sealed(segment, messages);
                false
            }
            Command::Control(request, reply) => {
                let _ = reply.send(self.control(request));
                false
            }
            Command::Relayed(result) => {
                self.relayed(result);
                false
            }
            Command::Reconfigure(cfg) => {
                let QueueConfig {
                    hostname,
                    local_domains,
                    retry,
                    routes,
                    rewrite,
                    ..
                } = *cfg;
                self.cfg = QueueConfig {
                    hostname,
                    local_domains,
                    retry,
                    routes,
                    rewrite,
                    ..self.cfg.clone()
                };
                false
            }
            Command::Shutdown => true,
        }
    }

    fn schedule(&mut self, id: QueueId, due_ms: u64, resumed: bool) {
        if let Some(old) = self.entries.get(&id) {
            self.timers.remove(&(old.due_ms, id));
        }
        let deferred = due_ms > 0;
        self.entries.insert(
            id,
            Entry {
                due_ms,
                resumed,
                deferred,
            },
        );
        self.timers.insert((due_ms, id));
    }

    fn forget(&mut self, id: &QueueId) {
        self.described.remove(id);
        if let Some(old) = self.entries.remove(id) {
            self.timers.remove(&(old.due_ms, *id));
        }
        self.forced.remove(id);
    }

    fn publish_size(&self) {
        let deferred = self.entries.values().filter(|e| e.deferred).count() as u64;
        self.metrics
            .set_queue_size(self.entries.len() as u64 - deferred, deferred);
    }

    /// Attempts every message due at `now`, in batches of [`MAX_BATCH`].
    fn round(&mut self, now: u64) {
        loop {
            let due: Vec<QueueId> = self
                .timers
                .iter()
                .take_while(|(at, _)| *at <= now)
                .take(MAX_BATCH)
                .map(|(_, id)| *id)
                .collect();
            if due.is_empty() {
                return;
            }
            self.attempt(&due, now);
        }
    }

    /// One batch: loads each message and record, delivers its due recipients, records what
    /// became of them, notifies senders of failures, reschedules or removes each message.
    fn attempt(&mut self, ids: &[QueueId], now: u64) {
        let mut attempts = Vec::with_capacity(ids.len());
        for &id in ids {
            let force = self.forced.remove(&id);
            let loaded = self.load(id, now, true).and_then(|loaded| {
                let Some((mut queued, record)) = loaded else {
                    return Ok(None);
                };
                let due: Vec<(usize, Route)> = record
                    .recipients
                    .iter()
                    .enumerate()
                    .filter(|(_, r)| r.is_due(now, force))
                    .map(|(i, r)| (i, self.route(&r.address)))
                    .collect();
                // Maildir needs the message itself; the relay reads it from the spool.
                if queued.is_released() && due.iter().any(|(_, r)| *r == Route::Maildir) {
                    queued = self.store.message(&id)?;
                }
                Ok(Some(Attempt {
                    queued,
                    record,
                    due,
                }))
            });
            match loaded {
                Ok(Some(attempt)) => attempts.push(attempt),
                Ok(None) => self.forget(&id),
                Err(e) => {
                    // Unreadable (a disk error, a corrupt file): keep it, try again later.
                    tracing::error!(%id, error = %e, "queue: cannot read message; retrying later");
                    let later = now + self.cfg.retry.delay(1).as_millis() as u64;
                    self.schedule(id, later, true);
                }
            }
        }
        self.deliver_maildir(&mut attempts, now);
        let mut done = Vec::with_capacity(attempts.len());
        for mut attempt in attempts {
            let flights = self.submit_remote(&mut attempt, now);
            let id = attempt.queued.id;
            if flights == 0 {
                done.push(attempt);
            } else {
                // Not due again until its results are in.
                if let Some(entry) = self.entries.get(&id) {
                    self.timers.remove(&(entry.due_ms, id));
                }
                attempt.queued.release_message();
                self.busy.insert(
                    id,
                    Busy {
                        attempt,
                        outstanding: flights,
                    },
                );
            }
        }
        self.send_outbox();
        self.notify(&mut done, now);
        self.settle(done);
    }

    /// Hands the batch's network attempts to the relay in one go: one wake-up of its thread
    /// per batch, not per message. If the relay has stopped, each attempt gets the result a
    /// stopped relay would give (deferred), through the usual bookkeeping.
    fn send_outbox(&mut self) {
        if self.outbox.is_empty() {
            return;
        }
        let batch = std::mem::take(&mut self.outbox);
        let refused = match &self.relay {
            Some(relay) => match relay.submit_all(batch) {
                Ok(()) => return,
                Err(refused) => refused,
            },
            None => batch,
        };
        for attempt in refused {
            let outcome = RcptOutcome {
                verdict: Verdict::Deferred,
                status: "4.3.0".into(),
                reply: Some(RELAY_STOPPED.into()),
                detail: RELAY_STOPPED.into(),
            };
            self.relayed(AttemptResult {
                token: attempt.token,
                via: attempt.route.via(),
                outcomes: vec![outcome; attempt.to.len()],
                queue_id: attempt.queue_id,
                peer: None,
            });
        }
    }

    /// The message and its record (built from the envelope on its first attempt); `None` if
    /// it is no longer queued. `attempting`: for an attempt (or a bounce), not a listing.
    fn load(
        &mut self,
        id: QueueId,
        now: u64,
        attempting: bool,
    ) -> Result<Option<(Queued, Record)>, SpoolError> {
        if !self.store.contains(&id) {
            return Ok(None);
        }
        // An attempt uses the worker's description up; a listing only looks at it.
        let described = if attempting {
            self.described.remove(&id)
        } else {
            self.described.get(&id).cloned()
        };
        let queued = match described {
            Some((envelope, shape)) => Queued::described(id, envelope, shape),
            None => self.store.message(&id)?,
        };
        let record = match self.store.record(&id)? {
            Some(record) => record,
            None => {
                let rewrite = self.cfg.rewrite.load();
                let mut recipients: Vec<Recipient> = Vec::new();
                for rcpt in &queued.envelope.rcpt_to {
                    let original = rcpt.to_string();
                    for address in rewrite.expand(rcpt) {
                        let original = (address != original).then(|| original.clone());
                        recipients.push(Recipient::pending(address, original));
                    }
                }
                Record {
                    arrival_ms: now,
                    recipients,
                }
            }
        };
        Ok(Some((queued, record)))
    }

    fn route(&self, address: &str) -> Route {
        let local = matches!(
            parse_mailbox(address).map(|m| m.domain),
            Ok(Domain::Name(d)) if self.cfg.local_domains.contains(&d.to_ascii_lowercase())
        );
        let (local_route, remote_route) = &self.cfg.routes;
        match if local { local_route } else { remote_route } {
            RelayRoute::Maildir => Route::Maildir,
            other => Route::Remote(other.clone()),
        }
    }

    /// Every Maildir recipient of the batch, in one [`Maildir::deliver`] call.
    fn deliver_maildir(&mut self, attempts: &mut [Attempt], now: u64) {
        let mut jobs = Vec::new();
        let mut owners = Vec::new();
        for (a, attempt) in attempts.iter().enumerate() {
            // Addresses come from the envelope or the rewriting tables, both parsed already.
            let (which, rcpts): (Vec<usize>, Vec<Mailbox>) = attempt
                .due
                .iter()
                .filter(|(_, route)| *route == Route::Maildir)
                .filter_map(|&(i, _)| {
                    let r = attempt.record.recipients.get(i)?;
                    Some((i, parse_mailbox(&r.address).ok()?))
                })
                .unzip();
            if rcpts.is_empty() {
                continue;
            }
            let resumed = self
                .entries
                .get(&attempt.queued.id)
                .is_none_or(|e| e.resumed);
            jobs.push(MaildirJob {
                queued: &attempt.queued,
                rcpts,
                resumed,
            });
            owners.push((a, which));
        }
        if jobs.is_empty() {
            return;
        }
        let results = self.maildir.deliver(&jobs);
        drop(jobs);
        for ((a, which), results) in owners.into_iter().zip(results) {
            let Some(attempt) = attempts.get_mut(a) else {
                continue;
            };
            for (i, result) in which.into_iter().zip(results) {
                let outcome = match result {
                    RcptResult::Delivered { mailbox } => Outcome::Sent {
                        relay: format!("maildir[{}]", mailbox.display()),
                        reply: "250 2.0.0 delivered to maildir".into(),
                    },
                    RcptResult::Deferred(error) => Outcome::Deferred {
                        relay: "maildir".into(),
                        reply: format!("451 4.3.0 {error}"),
                    },
                    RcptResult::Failed(e) => Outcome::Failed {
                        relay: "maildir".into(),
                        reply: format!("550 5.1.1 {e}"),
                    },
                };
                self.record_outcome(attempt, i, Via::Maildir, outcome, None, now);
            }
        }
    }

    /// Hands the message's due network recipients to the relay, one attempt per route (and,
    /// for MX, per recipient domain); returns how many attempts are in progress. Without a
    /// relay, or once it has stopped, they are deferred.
    fn submit_remote(&mut self, attempt: &mut Attempt, now: u64) -> usize {
        let mut groups: Vec<((RelayRoute, String), Vec<usize>)> = Vec::new();
        for (i, route) in &attempt.due {
            let Route::Remote(route) = route else {
                continue;
            };
            let Some(r) = attempt.record.recipients.get(*i) else {
                continue;
            };
            let domain = r
                .address
                .rsplit_once('@')
                .map(|(_, d)| d.to_ascii_lowercase())
                .unwrap_or_default();
            // One attempt per MX domain; a next hop takes every domain in one.
            let key = match route {
                RelayRoute::Mx => (route.clone(), domain),
                _ => (route.clone(), String::new()),
            };
            match groups.iter_mut().find(|(k, _)| *k == key) {
                Some((_, list)) => list.push(*i),
                None => groups.push((key, vec![*i])),
            }
        }
        let mut flights = 0;
        for ((route, domain), rcpts) in groups {
            let via = route.via();
            let to: Vec<Mailbox> = rcpts
                .iter()
                .filter_map(|&i| attempt.record.recipients.get(i))
                .filter_map(|r| parse_mailbox(&r.address).ok())
                .collect();
            let submitted = match (&self.relay, to.len() == rcpts.len()) {
                (Some(_), true) => {
                    let token = self.next_token;
                    self.next_token += 1;
                    let queued = &attempt.queued;
                    let relay_attempt = RelayAttempt {
                        token,
                        queue_id: queued.id.to_string(),
                        domain: match route {
                            RelayRoute::Mx => domain,
                            _ => to
                                .first()
                                .map(|m| m.domain.to_string().to_ascii_lowercase())
                                .unwrap_or_default(),
                        },
                        route,
                        from: queued.envelope.mail_from.clone(),
                        to,
                        content: self.store.content(queued),
                        eight_bit: queued.eight_bit(),
                        smtputf8: queued.envelope.smtputf8,
                    };
                    self.flights.insert(
                        token,
                        Flight {
                            id: queued.id,
                            rcpts: rcpts.clone(),
                        },
                    );
                    // Sent with the rest of the batch by `send_outbox`.
                    self.outbox.push(relay_attempt);
                    true
                }
                _ => false,
            };
            if submitted {
                flights += 1;
                continue;
            }
            let reply = if self.relay.is_some() {
                RELAY_STOPPED
            } else {
                "451 4.4.0 no route to remote destinations"
            };
            for i in rcpts {
                let outcome = Outcome::Deferred {
                    relay: "none".into(),
                    reply: reply.into(),
                };
                self.record_outcome(attempt, i, via, outcome, None, now);
            }
        }
        flights
    }

    /// The relay's verdicts on one attempt; once every attempt of the message is in, its
    /// failures are reported and it is saved, rescheduled or removed.
    fn relayed(&mut self, result: AttemptResult) {
        let now = now_ms();
        let Some(flight) = self.flights.remove(&result.token) else {
            tracing::warn!(
                token = result.token,
                "relay result for no attempt in progress"
            );
            return;
        };
        let Some(mut busy) = self.busy.remove(&flight.id) else {
            return;
        };
        let relay = result
            .peer
            .as_ref()
            .map_or_else(|| "none".to_owned(), ToString::to_string);
        let tls = result
            .peer
            .as_ref()
            .and_then(|p| p.tls.as_ref())
            .map(|t| format!("{} {}", t.version, t.cipher));
        for (&i, outcome) in flight.rcpts.iter().zip(&result.outcomes) {
            // The server's reply is the DSN's Diagnostic-Code; the detail (which command it
            // answered, or the local cause) is what the log says.
            let reply = outcome
                .reply
                .clone()
                .unwrap_or_else(|| outcome.detail.clone());
            let relay = relay.clone();
            let verdict = match outcome.verdict {
                Verdict::Delivered => Outcome::Sent { relay, reply },
                Verdict::Deferred => Outcome::Deferred { relay, reply },
                Verdict::Failed => Outcome::Failed { relay, reply },
            };
            if let Some(r) = busy.attempt.record.recipients.get_mut(i) {
                r.status = Some(outcome.status.clone());
            }
            let detail =
                (outcome.reply.as_deref() != Some(&outcome.detail)).then_some(&*outcome.detail);
            self.record_outcome_logged(
                &mut busy.attempt,
                i,
                result.via,
                verdict,
                tls.as_deref(),
                detail,
                now,
            );
        }
        busy.outstanding = busy.outstanding.saturating_sub(1);
        if busy.outstanding > 0 {
            self.busy.insert(flight.id, busy);
            return;
        }
        let mut done = vec![busy.attempt];
        self.notify(&mut done, now);
        self.settle(done);
    }

    /// At shutdown: the relay finishes what it can within its grace, defers the rest, and
    /// every result is recorded before the thread ends.
    fn stop_relay(&mut self, rx: &mpsc::Receiver<Command>) {
        let Some(relay) = self.relay.take() else {
            return;
        };
        relay.shutdown(self.relay_grace);
        // The relay has sent every result into the inbox.
        let end = clock::now() + Duration::from_secs(5);
        while !self.flights.is_empty() {
            match rx.recv_timeout(end.saturating_duration_since(clock::now())) {
                Ok(Command::Relayed(result)) => self.relayed(result),
                Ok(Command::Control(_, reply)) => {
                    let _ = reply.send(Answer::Error("the queue is shutting down".into()));
                }
                Ok(Command::Sealed(segment, messages)) => self.store.sealed(segment, messages),
                Ok(Command::Enqueue(id, Some(placed), _)) => self.store.add(id, placed),
                Ok(Command::Enqueue(_, None, _) | Command::Reconfigure(_) | Command::Shutdown) => {}
                Err(_) => break,
            }
        }
    }

    /// Records what became of recipient `i`, logs it and counts it.
    fn record_outcome(
        &self,
        attempt: &mut Attempt,
        i: usize,
        via: Via,
        outcome: Outcome,
        tls: Option<&str>,
        now: u64,
    ) {
        self.record_outcome_logged(attempt, i, via, outcome, tls, None, now);
    }

    /// [`Scheduler::record_outcome`], with a `detail` for the log line in place of the reply.
    #[allow(clippy::too_many_arguments)]
    fn record_outcome_logged(
        &self,
        attempt: &mut Attempt,
        i: usize,
        via: Via,
        outcome: Outcome,
        tls: Option<&str>,
        detail: Option<&str>,
        now: u64,
    ) {
        let arrival = attempt.record.arrival_ms;
        let Some(r) = attempt.record.recipients.get_mut(i) else {
            return;
        };
        r.attempts += 1;
        let (result, relay, reply) = match outcome {
            Outcome::Sent { relay, reply } => {
                r.state = State::Delivered;
                (Verdict::Delivered, relay, reply)
            }
            Outcome::Deferred { relay, reply } if !self.cfg.retry.expired(arrival, now) => {
                r.state = State::Deferred;
                r.next_attempt_ms = now + self.cfg.retry.delay(r.attempts).as_millis() as u64;
                (Verdict::Deferred, relay, reply)
            }
            Outcome::Deferred { relay, reply } => {
                r.state = State::Failed;
                (
                    Verdict::Failed,
                    relay,
                    format!("{reply} (gave up: message older than relay.max_age_secs)"),
                )
            }
            Outcome::Failed { relay, reply } => {
                r.state = State::Failed;
                (Verdict::Failed, relay, reply)
            }
        };
        self.metrics.delivery_attempt(via, result);
        let logged = detail.unwrap_or(&reply);
        let delay = now.saturating_sub(arrival);
        log_attempt(
            &attempt.queued,
            r,
            &relay,
            delay,
            tls.unwrap_or("none"),
            result,
            logged,
        );
        r.last_reply = Some(reply);
    }

    /// Queues one notice per message for the recipients that failed and were not reported yet.
    fn notify(&mut self, attempts: &mut [Attempt], now: u64) {
        for attempt in attempts.iter_mut() {
            let unreported = attempt
                .record
                .recipients
                .iter()
                .any(|r| r.state == State::Failed && !r.notified);
            if !unreported {
                continue;
            }
            if attempt.queued.is_released() {
                // The notice quotes the message's header: read it (again).
                match self.store.message(&attempt.queued.id) {
                    Ok(queued) => attempt.queued = queued,
                    Err(e) => {
                        // Left unreported and queued: the next attempt tries again.
                        tracing::error!(id = %attempt.queued.id, error = %e, "queue: cannot read the message back for its notice of failure");
                        continue;
                    }
                }
            }
            let failed: Vec<&Recipient> = attempt
                .record
                .recipients
                .iter()
                .filter(|r| r.state == State::Failed && !r.notified)
                .collect();
            let wall = UNIX_EPOCH + Duration::from_millis(now);
            let notice = dsn::build(
                &self.cfg.hostname,
                &attempt.queued,
                attempt.record.arrival_ms,
                &failed,
                wall,
            );
            let id = attempt.queued.id;
            match notice {
                None => {
                    tracing::info!(%id, "no notice of failure: the sender is <>");
                }
                Some((envelope, content)) => match self.store.insert(&envelope, &content) {
                    Ok(notice_id) => {
                        tracing::info!(%id, notice = %notice_id, "sender notified of failure");
                        self.schedule(notice_id, 0, false);
                    }
                    Err(e) => {
                        // The failures stay unreported and the message queued: retried later.
                        tracing::error!(%id, error = %e, "cannot queue the notice of failure");
                        continue;
                    }
                },
            }
            for r in &mut attempt.record.recipients {
                if r.state == State::Failed {
                    r.notified = true;
                }
            }
        }
    }

    /// Saves each record that leaves work to do and reschedules its message; removes the
    /// messages that are done.
    fn settle(&mut self, attempts: Vec<Attempt>) {
        let mut keep = Vec::new();
        for attempt in &attempts {
            let id = attempt.queued.id;
            if attempt.record.is_done() {
                if let Err(e) = self.store.remove(&id) {
                    tracing::warn!(%id, error = %e, "done, but could not remove the message");
                }
                self.forget(&id);
            } else {
                keep.push((id, &attempt.record));
            }
        }
        if let Err(e) = self.store.save(&keep) {
            // The attempt stands (a delivered Maildir entry is found again); the next round
            // redoes what this record would have said.
            tracing::error!(error = %e, "queue: cannot save records");
        }
        for (id, record) in keep {
            let retry = self.cfg.retry.delay(1).as_millis() as u64;
            let due = record.next_due_ms().unwrap_or_else(|| now_ms() + retry);
            self.schedule(id, due, true);
        }
    }

    fn control(&mut self, request: Request) -> Answer {
        match request {
            Request::List => {
                let mut ids: Vec<QueueId> = self.entries.keys().copied().collect();
                ids.sort();
                Answer::List(ids.iter().filter_map(|id| self.info(id).ok()).collect())
            }
            Request::Show(id) => match self.info(&id) {
                Ok(info) => Answer::Show(info),
                Err(e) => Answer::Error(e),
            },
            Request::Flush(None) => {
                // Messages with relay attempts in progress are being attempted already.
                let ids: Vec<QueueId> = self
                    .entries
                    .keys()
                    .filter(|id| !self.busy.contains_key(id))
                    .copied()
                    .collect();
                for &id in &ids {
                    self.forced.insert(id);
                    self.schedule(id, 0, true);
                }
                Answer::Done(ids.len())
            }
            Request::Flush(Some(id)) => {
                if !self.entries.contains_key(&id) {
                    return Answer::Error(format!("{id}: not in the queue"));
                }
                if self.busy.contains_key(&id) {
                    return Answer::Done(0);
                }
                self.forced.insert(id);
                self.schedule(id, 0, true);
                Answer::Done(1)
            }
            Request::Delete(id) => {
                if !self.entries.contains_key(&id) {
                    return Answer::Error(format!("{id}: not in the queue"));
                }
                if self.busy.contains_key(&id) {
                    return Answer::Error(format!("{id}: being delivered; try again shortly"));
                }
                if let Err(e) = self.store.remove(&id).and_then(|()| self.store.flush()) {
                    return Answer::Error(e.to_string());
                }
                tracing::info!(%id, "removed by the operator");
                self.forget(&id);
                Answer::Done(1)
            }
            Request::Bounce(id) => self.bounce(id),
        }
    }

    /// Fails every recipient of `id` not delivered yet, with a notice to the sender.
    fn bounce(&mut self, id: QueueId) -> Answer {
        if !self.entries.contains_key(&id) {
            return Answer::Error(format!("{id}: not in the queue"));
        }
        if self.busy.contains_key(&id) {
            return Answer::Error(format!("{id}: being delivered; try again shortly"));
        }
        let now = now_ms();
        let (queued, record) = match self.load(id, now, true) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Answer::Error(format!("{id}: not in the queue")),
            Err(e) => return Answer::Error(e.to_string()),
        };
        let mut attempt = Attempt {
            queued,
            record,
            due: Vec::new(),
        };
        for r in &mut attempt.record.recipients {
            if !r.state.is_final() {
                r.state = State::Failed;
                r.last_reply = Some(match r.last_reply.take() {
                    Some(last) => format!("554 5.0.0 returned by the operator; last reply: {last}"),
                    None => "554 5.0.0 returned by the operator".into(),
                });
                tracing::info!(
                    "{id}: to=<{}>, relay=none, status=bounced (returned by the operator)",
                    r.address
                );
            }
        }
        let mut attempts = vec![attempt];
        self.notify(&mut attempts, now);
        self.settle(attempts);
        Answer::Done(1)
    }

    fn info(&mut self, id: &QueueId) -> Result<MessageInfo, String> {
        let (queued, record) = match self.load(*id, now_ms(), false) {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Err(format!("{id}: not in the queue")),
            Err(e) => return Err(e.to_string()),
        };
        Ok(MessageInfo {
            id: id.to_string(),
            from: queued
                .envelope
                .mail_from
                .as_ref()
                .map(Mailbox::to_string)
                .unwrap_or_default(),
            size: queued.message_len(),
            arrival: record.arrival_ms / 1000,
            state: record.summary().to_owned(),
            recipients: record.recipients,
        })
    }
}

/// What one attempt at one recipient came to, before the retry policy decides its state.
enum Outcome {
    Sent { relay: String, reply: String },
    Deferred { relay: String, reply: String },
    Failed { relay: String, reply: String },
}

/// The log line of one attempt at one recipient.
fn log_attempt(
    queued: &Queued,
    r: &Recipient,
    relay: &str,
    delay_ms: u64,
    tls: &str,
    result: Verdict,
    reply: &str,
) {
    let from = queued
        .envelope
        .mail_from
        .as_ref()
        .map(Mailbox::to_string)
        .unwrap_or_default();
    let orig = match &r.original {
        Some(o) => format!(", orig_to=<{o}>"),
        None => String::new(),
    };
    tracing::info!(
        "{}: from=<{from}>, to=<{}>{orig}, relay={relay}, delay={:.2}, tls={tls}, status={} ({reply})",
        queued.id,
        r.address,
        delay_ms as f64 / 1000.0,
        result.as_str(),
    );
}

#[cfg(test)]
mod tests;
