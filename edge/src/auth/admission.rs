//! Admission of password checks: how many one source may have in flight at once.
//!
//! The verifier's queue is shared by everyone; without a per-source share, one source could
//! fill it with guesses and lock every other user out with 454s. A source is counted as the
//! failure tracker counts it ([`source_of`]: an IPv4 address, or an IPv6 /64).

use std::net::IpAddr;

use ipnet::IpNet;

use super::source_of;
use crate::guard::PerSource;

/// Password checks one source may have in flight at once.
pub const MAX_CHECKS_PER_SOURCE: u32 = 2;

/// Password checks in flight, per source; shared by every worker, touched once per AUTH.
#[derive(Debug, Default)]
pub struct CheckSlots {
    in_flight: PerSource<IpNet>,
}

impl CheckSlots {
    /// Takes a check slot for `ip`'s source, or `None` if it has its share in flight.
    pub fn begin(&self, ip: IpAddr) -> Option<CheckSlot<'_>> {
        let source = source_of(ip);
        // Built only once taken: a slot's drop gives one back.
        if !self.in_flight.take(source, Some(MAX_CHECKS_PER_SOURCE)) {
            return None;
        }
        Some(CheckSlot {
            slots: self,
            source,
        })
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_source_gets_a_bounded_share_of_password_checks() {
        let slots = CheckSlots::default();
        let a: IpAddr = "2001:db8::1".parse().expect("literal");
        let same_64: IpAddr = "2001:db8::2".parse().expect("literal");
        let other: IpAddr = "192.0.2.1".parse().expect("literal");
        let first = slots.begin(a);
        let second = slots.begin(same_64);
        assert!(first.is_some() && second.is_some());
        assert!(slots.begin(a).is_none(), "a third check from the /64");
        assert!(slots.begin(other).is_some(), "other sources are unaffected");
        drop(first);
        assert!(slots.begin(a).is_some(), "a finished check frees its slot");
    }
}
