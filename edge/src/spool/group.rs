//! Group commit: concurrent commits on one worker share the fsync of `queue/`.
//!
//! A commit has renamed its file into `queue/` and needs *a directory fsync that started after
//! that rename*; an fsync already in flight may have started before it and proves nothing. So
//! each fsync gets a generation number: a caller that arrives when generation `g` has started
//! needs generation `g + 1`. If no fsync is in flight it starts that one itself (it is the
//! leader); otherwise it waits for the in-flight one to finish, and whoever wakes first starts
//! the next. One fsync thus covers every rename done before it started, and a burst of `n`
//! commits costs about two directory fsyncs instead of `n`.
//!
//! Single-threaded by design (one per worker, `!Send`): state is a `RefCell` that is never
//! borrowed across an `.await`, and waiting is a [`Notify`].

use std::cell::RefCell;
use std::future::Future;
use std::io;

use tokio::sync::Notify;

/// Shared directory-sync state of one worker.
#[derive(Debug, Default)]
pub(super) struct GroupSync {
    state: RefCell<State>,
    finished: Notify,
}

#[derive(Debug, Default)]
struct State {
    /// Generation of the last fsync started (0: none yet).
    started: u64,
    /// Generation of the last fsync finished, successfully or not.
    finished: u64,
    /// An fsync is running.
    in_flight: bool,
    /// Generation of the last fsync that failed (0: none), and its error.
    failed: u64,
    failure: Option<(io::ErrorKind, String)>,
    /// Fsyncs started so far: the number the group commit saves is `commits - syncs`.
    syncs: u64,
}

/// What a caller does next, decided under the borrow and done after it.
enum Step {
    Done(io::Result<()>),
    Lead(u64),
    Wait,
}

impl GroupSync {
    /// Fsyncs started so far.
    pub(super) fn syncs(&self) -> u64 {
        self.state.borrow().syncs
    }

    /// Returns once an fsync that started after this call began has succeeded. `fsync` is run
    /// only if this caller ends up leading one; it is never run twice.
    ///
    /// Errors are conservative: if any fsync of a generation this caller could rely on failed,
    /// the caller gets the error (Linux may drop dirty state after a failed fsync, so a later
    /// success would not prove the earlier rename durable).
    pub(super) async fn sync<F, Fut>(&self, fsync: F) -> io::Result<()>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = io::Result<()>>,
    {
        let needed = self.state.borrow().started + 1;
        let mut fsync = Some(fsync);
        loop {
            // Register for the wakeup before releasing the borrow, so that a finish between
            // this check and the await cannot be missed (single-threaded: nothing runs between).
            let notified = self.finished.notified();
            let step = {
                let mut s = self.state.borrow_mut();
                if s.finished >= needed {
                    Step::Done(if s.failed >= needed {
                        let (kind, msg) = s
                            .failure
                            .clone()
                            .unwrap_or((io::ErrorKind::Other, String::new()));
                        Err(io::Error::new(kind, format!("group fsync failed: {msg}")))
                    } else {
                        Ok(())
                    })
                } else if s.in_flight {
                    Step::Wait
                } else {
                    s.in_flight = true;
                    s.started += 1;
                    s.syncs += 1;
                    Step::Lead(s.started)
                }
            };
            match step {
                Step::Done(res) => return res,
                Step::Wait => notified.await,
                Step::Lead(generation) => {
                    let Some(fsync) = fsync.take() else {
                        // Unreachable: a caller leads at most once, since its own fsync's
                        // generation is >= needed and finishes the loop. Fail safe anyway.
                        self.release(generation, None);
                        return Err(io::Error::other("group fsync led twice"));
                    };
                    let mut guard = Leader {
                        group: self,
                        generation,
                        done: false,
                    };
                    let res = fsync().await;
                    guard.done = true;
                    self.release(generation, Some(&res));
                    res?;
                }
            }
        }
    }

    /// Ends the in-flight fsync of `generation`: `Some` records its result, `None` (the leader
    /// was cancelled) leaves the generation unfinished so that a waiter starts a new one.
    fn release(&self, generation: u64, res: Option<&io::Result<()>>) {
        let mut s = self.state.borrow_mut();
        s.in_flight = false;
        if let Some(res) = res {
            s.finished = generation;
            if let Err(e) = res {
                s.failed = generation;
                s.failure = Some((e.kind(), e.to_string()));
            }
        }
        drop(s);
        self.finished.notify_waiters();
    }
}

/// Releases the in-flight mark if the leader's future is dropped mid-fsync (the connection
/// task was cancelled), so that the waiters do not wait forever.
struct Leader<'a> {
    group: &'a GroupSync,
    generation: u64,
    done: bool,
}

impl Drop for Leader<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.group.release(self.generation, None);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use tokio::sync::oneshot;

    /// Runs `f` on a current-thread runtime with a `LocalSet`, as a worker would.
    fn local<F: Future<Output = ()>>(f: F) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        tokio::task::LocalSet::new().block_on(&rt, f);
    }

    /// Yields to the scheduler enough times for every ready local task to run.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[test]
    fn a_sync_in_flight_before_the_rename_does_not_count() {
        local(async {
            let group = Rc::new(GroupSync::default());
            let (release_first, first) = oneshot::channel::<()>();
            let (release_second, second) = oneshot::channel::<()>();
            let g = group.clone();
            let a = tokio::task::spawn_local(async move {
                g.sync(|| async move {
                    let _ = first.await;
                    Ok(())
                })
                .await
            });
            settle().await; // A leads generation 1, which is now in flight
            let b_done = Rc::new(Cell::new(false));
            let (g, flag) = (group.clone(), b_done.clone());
            let b = tokio::task::spawn_local(async move {
                let res = g
                    .sync(|| async move {
                        let _ = second.await;
                        Ok(())
                    })
                    .await;
                flag.set(true);
                res
            });
            settle().await; // B "renamed" after generation 1 started: it needs generation 2
            let _ = release_first.send(());
            settle().await;
            assert!(a.is_finished());
            assert!(
                !b_done.get(),
                "B was released by an fsync that started before it"
            );
            assert_eq!(group.syncs(), 2, "B leads generation 2 once 1 is done");
            let _ = release_second.send(());
            b.await.unwrap().unwrap();
            a.await.unwrap().unwrap();
        });
    }

    #[test]
    fn waiters_share_one_fsync_and_see_its_error() {
        local(async {
            let group = Rc::new(GroupSync::default());
            let (release, gate) = oneshot::channel::<()>();
            let g = group.clone();
            let leader = tokio::task::spawn_local(async move {
                g.sync(|| async move {
                    let _ = gate.await;
                    Ok(())
                })
                .await
            });
            settle().await;
            // Ten commits arrive while generation 1 runs: all need generation 2.
            let (release2, gate2) = oneshot::channel::<()>();
            let gate2 = Rc::new(RefCell::new(Some(gate2)));
            let mut waiters = Vec::new();
            for _ in 0..10 {
                let (g, gate2) = (group.clone(), gate2.clone());
                waiters.push(tokio::task::spawn_local(async move {
                    g.sync(|| async move {
                        let gate = gate2.borrow_mut().take();
                        if let Some(gate) = gate {
                            let _ = gate.await;
                        }
                        Err(io::Error::other("disk on fire"))
                    })
                    .await
                }));
            }
            settle().await;
            let _ = release.send(());
            settle().await;
            let _ = release2.send(());
            leader.await.unwrap().unwrap();
            for w in waiters {
                let err = w.await.unwrap().unwrap_err();
                assert!(err.to_string().contains("disk on fire"), "{err}");
            }
            assert_eq!(group.syncs(), 2);
        });
    }

    #[test]
    fn a_cancelled_leader_hands_over() {
        local(async {
            let group = Rc::new(GroupSync::default());
            let g = group.clone();
            let stuck = tokio::task::spawn_local(async move {
                g.sync(std::future::pending::<io::Result<()>>).await
            });
            settle().await;
            let g = group.clone();
            let waiter = tokio::task::spawn_local(async move { g.sync(|| async { Ok(()) }).await });
            settle().await;
            stuck.abort();
            waiter.await.unwrap().unwrap();
            assert_eq!(group.syncs(), 2);
        });
    }
}
