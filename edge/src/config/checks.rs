//! `[checks]`: the inbound trust checks of the delivery listeners.

use super::raw::{RawChecks, RawDnsbl};
use super::validate::{domain_name, Validator};
use crate::checks::{CheckMode, ChecksConfig};
use crate::guard::{DnsblConfig, DnsblZone, DEFAULT_THRESHOLD, MAX_WEIGHT, MAX_ZONES};

impl Validator<'_> {
    /// `[checks]`, each check `"tag"` when absent.
    pub(super) fn checks(&mut self, raw: RawChecks) -> Option<ChecksConfig> {
        let spf = self.check_mode("checks.spf", raw.spf.as_deref());
        let dkim = self.check_mode("checks.dkim", raw.dkim.as_deref());
        let dmarc = self.check_mode("checks.dmarc", raw.dmarc.as_deref());
        let arc = self.check_mode("checks.arc", raw.arc.as_deref());
        let dnsbl = self.dnsbl(&raw.dnsbl, raw.dnsbl_threshold);
        Some(ChecksConfig {
            spf: spf?,
            dkim: dkim?,
            dmarc: dmarc?,
            arc: arc?,
            dnsbl: dnsbl?,
        })
    }

    /// `[[checks.dnsbl]]` and `checks.dnsbl_threshold`.
    fn dnsbl(&mut self, raw: &[RawDnsbl], threshold: Option<i64>) -> Option<DnsblConfig> {
        let mut ok = true;
        if raw.len() > MAX_ZONES {
            self.push("checks.dnsbl", format!("at most {MAX_ZONES} lists"));
            ok = false;
        }
        let mut zones: Vec<DnsblZone> = Vec::with_capacity(raw.len());
        let mut seen = std::collections::HashSet::new();
        for (i, entry) in raw.iter().enumerate() {
            let at = format!("checks.dnsbl[{i}]");
            let zone = match domain_name(entry.zone.trim_end_matches('.')) {
                Ok(z) if !seen.insert(z.clone()) => {
                    self.push(format!("{at}.zone"), format!("{z:?} is listed twice"));
                    None
                }
                Ok(z) => Some(z),
                Err(e) => {
                    self.push(format!("{at}.zone"), e);
                    None
                }
            };
            let max = i64::from(MAX_WEIGHT);
            let weight = if entry.weight == 0 || !(-max..=max).contains(&entry.weight) {
                self.push(
                    format!("{at}.weight"),
                    format!(
                        "must be -{max}..=-1 (an allow list) or 1..={max} (a block list), got {}",
                        entry.weight
                    ),
                );
                None
            } else {
                i32::try_from(entry.weight).ok()
            };
            match (zone, weight) {
                (Some(zone), Some(weight)) => zones.push(DnsblZone { zone, weight }),
                _ => ok = false,
            }
        }
        let threshold = match threshold {
            None => Some(DEFAULT_THRESHOLD),
            Some(n) => self
                .int_in(
                    "checks.dnsbl_threshold",
                    n,
                    1,
                    u64::from(MAX_WEIGHT.unsigned_abs()) * MAX_ZONES as u64,
                    "",
                )
                .and_then(|n| i32::try_from(n).ok()),
        };
        match (ok, threshold) {
            (true, Some(threshold)) => Some(DnsblConfig { zones, threshold }),
            _ => None,
        }
    }

    fn check_mode(&mut self, key: &str, text: Option<&str>) -> Option<CheckMode> {
        let Some(text) = text else {
            return Some(CheckMode::default());
        };
        let mode = CheckMode::parse(text);
        if mode.is_none() {
            let names = CheckMode::NAMES.map(|n| format!("{n:?}")).join(", ");
            self.push(key, format!("expected one of {names}, got {text:?}"));
        }
        mode
    }
}
