//! Password checks on a small pool of std threads, so that argon2id (memory-hard, tens of
//! milliseconds of CPU by design) never runs on an io_uring worker and stalls its ring.
//!
//! ```text
//!  worker task ── verify(user, pw) ──► bounded queue ──► verifier thread: argon2id ──┐
//!       ▲                                                                             │
//!       └──────────────────────── oneshot: Verdict ◄────────────────────────────────┘
//! ```
//!
//! The queue is bounded by a count of checks in flight (queued or running): past it, `verify`
//! answers [`Verdict::Busy`] at once instead of letting a flood of AUTH attempts pile up
//! memory and latency. The driver answers that with `454 4.7.0` ([RFC 4954 §6]).
//!
//! [RFC 4954 §6]: https://www.rfc-editor.org/rfc/rfc4954#section-6

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use argon2::password_hash::{PasswordHash, PasswordVerifier};
use argon2::Argon2;
use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::users::normalize_login;
use super::{AuthError, CredentialStore};

/// Checks in flight (queued or running) allowed per verifier thread before [`Verdict::Busy`].
/// With OWASP parameters a check takes ~20-50 ms, so a full queue is about a second of waiting:
/// longer than that, a temporary failure serves the client better.
pub const MAX_PENDING_PER_THREAD: usize = 16;

/// Longest login looked up: an address is at most 254 octets ([RFC 5321 §4.5.3.1.3] path
/// minus the brackets). A longer one is unknown, and still costs a dummy check.
///
/// [RFC 5321 §4.5.3.1.3]: https://www.rfc-editor.org/rfc/rfc5321#section-4.5.3.1.3
const MAX_LOGIN: usize = 254;

/// The outcome of one password check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// The password is right; `user` is the login in its stored (lower-cased) form, the one to
    /// pass to [`CredentialStore::may_send_as`] and to name in logs.
    Ok {
        /// The authenticated login.
        user: String,
    },
    /// Unknown user or wrong password; deliberately not told apart (`535 5.7.8`).
    Invalid,
    /// Too many checks in flight, or the pool is gone: a temporary failure (`454 4.7.0`).
    Busy,
}

struct Job {
    user: String,
    password: Zeroizing<Vec<u8>>,
    reply: oneshot::Sender<Verdict>,
}

/// A pool of threads that check passwords against a [`CredentialStore`]. Shared by every
/// worker (`Arc<Verifier>`); dropping it stops the threads after the checks in flight.
pub struct Verifier {
    /// `None` only while dropping, so the threads see the channel close.
    tx: Option<SyncSender<Job>>,
    in_flight: Arc<AtomicUsize>,
    limit: usize,
    threads: Vec<JoinHandle<()>>,
    /// Tests hold this lock to stop the threads before they check anything.
    #[cfg(test)]
    pause: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Verifier")
            .field("threads", &self.threads.len())
            .field("in_flight", &self.in_flight.load(Ordering::Relaxed))
            .field("limit", &self.limit)
            .finish()
    }
}

impl Verifier {
    /// Starts `threads` verifier threads (`auth.verify_threads`, at least 1) that look users up
    /// in `store` at check time, so a reload applies to the next check.
    pub fn new(store: Arc<CredentialStore>, threads: usize) -> Result<Verifier, AuthError> {
        let threads = threads.max(1);
        let limit = threads * MAX_PENDING_PER_THREAD;
        // The in-flight count admits at most `limit` jobs, so this channel never fills and
        // `try_send` only fails if every thread is gone.
        let (tx, rx) = mpsc::sync_channel::<Job>(limit);
        let rx = Arc::new(Mutex::new(rx));
        let in_flight = Arc::new(AtomicUsize::new(0));
        #[cfg(test)]
        let pause = Arc::new(Mutex::new(()));
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let rx = Arc::clone(&rx);
            let store = Arc::clone(&store);
            let in_flight = Arc::clone(&in_flight);
            #[cfg(test)]
            let pause = Arc::clone(&pause);
            let spawned = std::thread::Builder::new()
                .name(format!("auth-verify-{i}"))
                .spawn(move || {
                    while let Some(job) = next_job(&rx) {
                        #[cfg(test)]
                        drop(pause.lock());
                        let verdict = check(&store, &job.user, &job.password);
                        // Count down before replying, so a caller that has its verdict can
                        // submit again at once.
                        in_flight.fetch_sub(1, Ordering::AcqRel);
                        // The session may have gone away; nobody to tell then.
                        let _ = job.reply.send(verdict);
                        // `job.password` is zeroed here, as the job drops.
                    }
                });
            match spawned {
                Ok(handle) => handles.push(handle),
                // Dropping `tx` (with the half-built pool) stops the threads already started.
                Err(e) => return Err(AuthError::Spawn(e)),
            }
        }
        Ok(Verifier {
            tx: Some(tx),
            in_flight,
            limit,
            threads: handles,
            #[cfg(test)]
            pause,
        })
    }

    /// Checks `password` for `user` (any case) on the pool. The check is queued now, when
    /// `verify` is called, not when the future is first polled; the future only waits for the
    /// answer and is `Send + 'static`, so a tokio-uring task can await it without blocking its
    /// ring. Dropping the future does not cancel the check.
    ///
    /// An unknown user is checked against a dummy hash with the parameters most users have,
    /// so it takes as long as a wrong password. `password` is zeroed once checked (or at once,
    /// when the answer is [`Verdict::Busy`]).
    pub fn verify(
        &self,
        user: String,
        password: Zeroizing<Vec<u8>>,
    ) -> impl Future<Output = Verdict> + Send + 'static {
        let rx = self.submit(user, password);
        async move {
            match rx {
                // A closed channel means the thread died mid-check: temporary, as for Busy.
                Some(rx) => rx.await.unwrap_or(Verdict::Busy),
                None => Verdict::Busy,
            }
        }
    }

    /// How many checks are queued or running.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn submit(
        &self,
        user: String,
        password: Zeroizing<Vec<u8>>,
    ) -> Option<oneshot::Receiver<Verdict>> {
        let tx = self.tx.as_ref()?;
        let admitted = self
            .in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.limit).then_some(n + 1)
            })
            .is_ok();
        if !admitted {
            return None;
        }
        let (reply, rx) = oneshot::channel();
        match tx.try_send(Job {
            user,
            password,
            reply,
        }) {
            Ok(()) => Some(rx),
            Err(_) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                None
            }
        }
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        self.tx = None;
        for handle in self.threads.drain(..) {
            // A thread that panicked has nothing left to clean up.
            let _ = handle.join();
        }
    }
}

/// The next job, or `None` once the pool is dropped. The lock is held only while waiting, not
/// while hashing, so the threads check in parallel.
fn next_job(rx: &Mutex<Receiver<Job>>) -> Option<Job> {
    let rx = rx.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    rx.recv().ok()
}

/// The argon2id check itself. Known and unknown users take the same path: one PHC parse and
/// one hash with the same parameters.
fn check(store: &CredentialStore, user: &str, password: &[u8]) -> Verdict {
    let credentials = store.current();
    let login = if user.len() <= MAX_LOGIN {
        normalize_login(user)
    } else {
        String::new()
    };
    let (phc, known) = credentials.phc_for(&login);
    // PHC strings were checked at load, so a parse failure cannot happen; it fails closed.
    let matched = PasswordHash::new(phc)
        .map(|hash| Argon2::default().verify_password(password, &hash).is_ok())
        .unwrap_or(false);
    if known && matched {
        Verdict::Ok { user: login }
    } else {
        Verdict::Invalid
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::users::tests::users_file;
    use crate::auth::Credentials;

    fn verifier(threads: usize) -> Verifier {
        let users = users_file(&[("alice@example.test", "correct horse")]);
        let creds = Credentials::parse(users.as_bytes(), None).unwrap();
        let store = Arc::new(CredentialStore::from_credentials(Arc::new(creds)));
        Verifier::new(store, threads).unwrap()
    }

    fn block_on<F: Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap()
            .block_on(f)
    }

    fn pw(s: &str) -> Zeroizing<Vec<u8>> {
        Zeroizing::new(s.as_bytes().to_vec())
    }

    #[test]
    fn right_wrong_and_unknown() {
        let v = verifier(2);
        assert_eq!(
            block_on(v.verify("Alice@Example.TEST".into(), pw("correct horse"))),
            Verdict::Ok {
                user: "alice@example.test".into()
            }
        );
        assert_eq!(
            block_on(v.verify("alice@example.test".into(), pw("wrong"))),
            Verdict::Invalid
        );
        assert_eq!(
            block_on(v.verify("bob@example.test".into(), pw("correct horse"))),
            Verdict::Invalid
        );
        assert_eq!(
            block_on(v.verify("x".repeat(10_000), pw("correct horse"))),
            Verdict::Invalid
        );
        assert_eq!(v.in_flight(), 0);
    }

    #[test]
    fn busy_when_saturated_then_recovers() {
        let v = verifier(1);
        let paused = v.pause.lock().unwrap();
        let pending: Vec<_> = (0..MAX_PENDING_PER_THREAD)
            .map(|_| v.verify("alice@example.test".into(), pw("correct horse")))
            .collect();
        assert_eq!(v.in_flight(), MAX_PENDING_PER_THREAD);
        assert_eq!(
            block_on(v.verify("alice@example.test".into(), pw("correct horse"))),
            Verdict::Busy
        );
        drop(paused);
        for f in pending {
            assert!(matches!(block_on(f), Verdict::Ok { .. }));
        }
        assert_eq!(v.in_flight(), 0);
        assert!(matches!(
            block_on(v.verify("alice@example.test".into(), pw("correct horse"))),
            Verdict::Ok { .. }
        ));
    }

    #[test]
    fn reload_applies_to_the_next_check() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users");
        std::fs::write(&path, users_file(&[("bob@example.test", "pw")])).unwrap();
        let config = crate::auth::AuthConfig {
            users: Some(path),
            ..Default::default()
        };
        let store = Arc::new(CredentialStore::new(&config));
        let v = Verifier::new(Arc::clone(&store), 1).unwrap();
        assert_eq!(
            block_on(v.verify("bob@example.test".into(), pw("pw"))),
            Verdict::Invalid
        );
        store.reload(&config).unwrap();
        assert!(matches!(
            block_on(v.verify("bob@example.test".into(), pw("pw"))),
            Verdict::Ok { .. }
        ));
    }
}
