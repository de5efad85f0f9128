//! Admission of password checks: how many one source may have in flight at once.
//!
//! The verifier's queue is shared by everyone; without a per-source share, one source could
//! fill it with guesses and lock every other user out with 454s. A source is counted as the
//! failure tracker counts it ([`source_of`]: an IPv4 address, or an IPv6 /64).
//!
//! A check over the source's share (`auth.max_checks_per_source`) waits for one of the
//! source's checks to finish, up to [`CHECK_WAIT`], and only then is answered 454: a mail
//! client that opens several connections and logs in on all of them at once is served, not
//! refused. The wait is bounded, and so is the queue: each waiter is one session, and sessions
//! per source are capped by `limits.max_connections_per_ip`.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use ipnet::IpNet;
use tokio::sync::Notify;

use super::source_of;
use crate::guard::PerSource;

/// Default `auth.max_checks_per_source`.
pub const DEFAULT_MAX_CHECKS_PER_SOURCE: u32 = 8;
/// Largest `auth.max_checks_per_source`: more than the verifier queues for one thread
/// ([`super::MAX_PENDING_PER_THREAD`]) would let one source fill it.
pub const MAX_CHECKS_PER_SOURCE: u32 = super::MAX_PENDING_PER_THREAD as u32;
/// How long a check over its source's share waits for a slot before 454: far longer than a
/// few argon2id checks take, far shorter than a client's command timeout (RFC 5321
/// §4.5.3.2.7: 5 minutes).
pub const CHECK_WAIT: Duration = Duration::from_secs(30);

/// Password checks in flight, per source; shared by every worker, touched once per AUTH.
#[derive(Debug)]
pub struct CheckSlots {
    in_flight: PerSource<IpNet>,
    /// Checks one source may have in flight; a reload may change it ([`CheckSlots::set_max`]).
    max: AtomicU32,
    /// How long a check waits for a slot.
    wait: Duration,
    /// Signalled when a check ends; waiters (on any worker's runtime) try again.
    released: Notify,
}

impl CheckSlots {
    /// At most `max` checks in flight per source (at least one); a check over it waits up to
    /// `wait`.
    pub fn new(max: u32, wait: Duration) -> CheckSlots {
        CheckSlots {
            in_flight: PerSource::default(),
            max: AtomicU32::new(max.max(1)),
            wait,
            released: Notify::new(),
        }
    }

    /// At most `max` checks in flight per source (at least one) from now; checks in flight
    /// over the new share finish.
    pub fn set_max(&self, max: u32) {
        self.max.store(max.max(1), Ordering::Relaxed);
    }

    /// Takes a check slot for `ip`'s source, waiting while it has its share in flight; `None`
    /// if none came free within the wait.
    pub async fn begin(&self, ip: IpAddr) -> Option<CheckSlot<'_>> {
        let source = source_of(ip);
        let expired = tokio::time::sleep(self.wait);
        tokio::pin!(expired);
        loop {
            // Registered before the attempt, so a release between the attempt and the wait
            // is not missed.
            let released = self.released.notified();
            tokio::pin!(released);
            released.as_mut().enable();
            // Built only once taken: a slot's drop gives one back.
            if self
                .in_flight
                .take(source, Some(self.max.load(Ordering::Relaxed)))
            {
                return Some(CheckSlot {
                    slots: self,
                    source,
                });
            }
            tokio::select! {
                () = &mut released => {}
                () = &mut expired => return None,
            }
        }
    }
}

/// One password check in flight, released on drop.
#[derive(Debug)]
pub struct CheckSlot<'a> {
    slots: &'a CheckSlots,
    source: IpNet,
}

impl Drop for CheckSlot<'_> {
    fn drop(&mut self) {
        self.slots.in_flight.release(&self.source);
        self.slots.released.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn one_source_gets_a_bounded_share_of_password_checks() {
        // A short wait: the test needs the bound to end, not its length.
        let slots = CheckSlots::new(2, Duration::from_millis(10));
        let a: IpAddr = "2001:db8::1".parse().expect("literal");
        let same_64: IpAddr = "2001:db8::2".parse().expect("literal");
        let other: IpAddr = "192.0.2.1".parse().expect("literal");
        block_on(async {
            let first = slots.begin(a).await;
            let second = slots.begin(same_64).await;
            assert!(first.is_some() && second.is_some());
            assert!(slots.begin(a).await.is_none(), "a third check from the /64");
            assert!(
                slots.begin(other).await.is_some(),
                "other sources are unaffected"
            );
            drop(first);
            assert!(
                slots.begin(a).await.is_some(),
                "a finished check frees its slot"
            );
        });
    }

    #[test]
    fn a_check_over_the_share_waits_for_one_to_finish() {
        let slots = CheckSlots::new(1, Duration::from_secs(3600));
        let a: IpAddr = "192.0.2.1".parse().expect("literal");
        block_on(async {
            let first = slots.begin(a).await.expect("a free slot");
            let waiting = slots.begin(a);
            let release = async move {
                tokio::task::yield_now().await;
                drop(first);
            };
            let (second, ()) = tokio::join!(waiting, release);
            assert!(second.is_some(), "the waiter got the slot that came free");
        });
    }
}
