//! `[checks]`: the inbound trust checks of the delivery listeners.

use super::raw::RawChecks;
use super::validate::Validator;
use crate::checks::{CheckMode, ChecksConfig};

impl Validator<'_> {
    /// `[checks]`, each check `"tag"` when absent.
    pub(super) fn checks(&mut self, raw: RawChecks) -> Option<ChecksConfig> {
        let spf = self.check_mode("checks.spf", raw.spf.as_deref());
        let dkim = self.check_mode("checks.dkim", raw.dkim.as_deref());
        let dmarc = self.check_mode("checks.dmarc", raw.dmarc.as_deref());
        let arc = self.check_mode("checks.arc", raw.arc.as_deref());
        Some(ChecksConfig {
            spf: spf?,
            dkim: dkim?,
            dmarc: dmarc?,
            arc: arc?,
        })
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
