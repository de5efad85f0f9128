//! AUTH as one SMTP session sees it: admission of the password check, the check itself off the
//! ring, and the decision on its verdict (the reply, the tarpit delay, a ban, whether the
//! session must end). The driver executes [`AuthDecision`]s and decides nothing itself, as
//! quinn-proto's endpoint hands its driver decisions to carry out.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use super::admission::{CheckSlots, CHECK_WAIT};
use super::{AbuseTracker, AuthConfig, AuthError, CredentialStore, Verdict, Verifier};
use crate::guard::{BanReason, Guard};
use crate::protocol::{AuthOutcome, Credentials as SaslCredentials};

/// Failed AUTH attempts one session may make before it is closed: guesses on a connection
/// opened before its source was banned must not go on uncounted.
pub const MAX_FAILURES_PER_SESSION: u32 = 3;

/// What sessions need for SMTP AUTH, shared by every worker. Touched once per AUTH attempt and
/// once per connection (the trusted-network check), never per command.
pub struct AuthServices {
    /// The users and their aliases.
    pub store: Arc<CredentialStore>,
    /// Password checks, off the rings.
    pub verifier: Verifier,
    /// Failed logins per source; the ban decision.
    pub abuse: AbuseTracker,
    /// Password checks in flight per source.
    pub checks: CheckSlots,
}

/// One session's AUTH history, for the tarpit and [`MAX_FAILURES_PER_SESSION`].
#[derive(Debug, Default)]
pub struct SessionAuth {
    failures: u32,
}

/// What to do with the result of one AUTH attempt.
#[derive(Debug, PartialEq, Eq)]
#[must_use]
pub struct AuthDecision {
    /// The verdict for the engine, `Connection::handle_auth`.
    pub outcome: AuthOutcome,
    /// Hand the verdict over only after this long (the tarpit: zero but after failures).
    pub delay: Duration,
    /// End the session after the reply: its source is banned, or it used up its failures.
    pub close: bool,
    /// This failure banned the source (it reached `auth.max_failures` and the guard banned it).
    pub banned: bool,
}

impl AuthServices {
    /// Loads the credential store from `config` and starts the verifier threads.
    pub fn start(config: &AuthConfig) -> Result<AuthServices, AuthError> {
        let store = Arc::new(CredentialStore::new(config));
        Ok(AuthServices {
            verifier: Verifier::new(store.clone(), config.verify_threads)?,
            abuse: AbuseTracker::new(config),
            checks: CheckSlots::new(config.max_checks_per_source, CHECK_WAIT),
            store,
        })
    }

    /// Takes `config` for the next AUTH (a reload): its users and aliases, failure limits,
    /// ban length, tarpit and per-source share of checks. `auth.verify_threads` is fixed at
    /// start. Sessions read `submission_networks` and `trace_login` from their own snapshot.
    pub fn reconfigure(&self, config: &AuthConfig) {
        self.store.replace(Arc::clone(&config.credentials));
        self.abuse.set_limits(config);
        self.checks.set_max(config.max_checks_per_source);
    }

    /// Checks `credentials` from `ip` off the ring. A source with its share of checks in
    /// flight waits for one to end, and gets [`Verdict::Busy`] (454, try again later) only if
    /// none does within [`CHECK_WAIT`].
    pub async fn check(&self, ip: IpAddr, credentials: &SaslCredentials) -> Verdict {
        if credentials.authorize_as.is_some() {
            // Acting for another identity is not offered: a failure like any other.
            return Verdict::Invalid;
        }
        let Some(_slot) = self.checks.begin(ip).await else {
            return Verdict::Busy;
        };
        let password = Zeroizing::new(credentials.password.expose().to_vec());
        self.verifier
            .verify(credentials.username.clone(), password)
            .await
    }

    /// Decides on `verdict` for a session from `ip`: a failure is counted for the source (the
    /// `auth.max_failures`-th bans it through `guard`) and for the session, and is answered
    /// after a delay that grows with the session's failures.
    pub fn decide(
        &self,
        session: &mut SessionAuth,
        ip: IpAddr,
        now: Instant,
        verdict: Verdict,
        guard: &Guard,
    ) -> AuthDecision {
        let answer = |outcome| AuthDecision {
            outcome,
            delay: Duration::ZERO,
            close: false,
            banned: false,
        };
        match verdict {
            Verdict::Ok { user } => {
                // A success does not clear the source's failures: one good account must not
                // reset the count for guesses against others from the same address.
                tracing::info!(%ip, login = %user, "authenticated");
                answer(AuthOutcome::Success {
                    senders: self.store.allowed_senders(&user),
                    login: user,
                })
            }
            Verdict::Busy => answer(AuthOutcome::Unavailable),
            Verdict::Invalid => {
                session.failures += 1;
                // A trusted source's failures are counted in the metrics and logged (by the
                // driver, from this decision), never toward a ban (as Postfix exempts
                // $mynetworks): a local webmail relaying one user's typos must not lock the
                // host out. The tarpit and the per-session cap still apply.
                let ban = (!guard.is_trusted(ip))
                    .then(|| self.abuse.record_failure(ip, now))
                    .flatten();
                // AUTH bans last `auth.ban_secs`, not the shield's default. The guard may still
                // refuse (a PROXY balancer is never banned): only its verdict is reported.
                let banned = ban.is_some_and(|ban| {
                    let duration = ban.until.saturating_duration_since(now);
                    guard.ban_for(ip, now, BanReason::AuthFailures, duration)
                });
                AuthDecision {
                    banned,
                    outcome: AuthOutcome::Invalid,
                    // The tarpit: a guesser's rate drops with every failure on the session.
                    delay: self.abuse.tarpit(session.failures),
                    // Banned by this failure or by another session's.
                    close: session.failures >= MAX_FAILURES_PER_SESSION || guard.is_banned(ip, now),
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::disallowed_methods)] // tests take "now" once and move it by hand
mod tests {
    use super::*;
    use crate::shield::ShieldConfig;

    fn services(max_failures: u32) -> AuthServices {
        AuthServices::start(&AuthConfig {
            max_failures,
            tarpit_max: Duration::from_secs(3),
            verify_threads: 1,
            ..AuthConfig::default()
        })
        .expect("one verifier thread")
    }

    fn guard() -> Arc<Guard> {
        let cfg = ShieldConfig {
            enabled: false,
            ..ShieldConfig::default()
        };
        Guard::start(&cfg, &crate::guard::GuardConfig::default(), 0, 1_000)
            .expect("disabled shield always starts")
    }

    #[test]
    fn failures_are_tarpitted_and_end_the_session_at_its_cap() {
        let (auth, guard) = (services(100), guard());
        let ip: IpAddr = "192.0.2.7".parse().expect("literal");
        let now = Instant::now();
        let mut session = SessionAuth::default();
        let decisions: Vec<_> = (0..3)
            .map(|_| auth.decide(&mut session, ip, now, Verdict::Invalid, &guard))
            .map(|d| (d.outcome, d.delay.as_secs(), d.close))
            .collect();
        assert_eq!(
            decisions,
            [
                (AuthOutcome::Invalid, 1, false),
                (AuthOutcome::Invalid, 2, false),
                (AuthOutcome::Invalid, 3, true),
            ]
        );
        assert!(
            !guard.is_banned(ip, now),
            "three failures are under the source's limit"
        );
        // A fresh session from the same source starts its own count and tarpit.
        let d = auth.decide(
            &mut SessionAuth::default(),
            ip,
            now,
            Verdict::Invalid,
            &guard,
        );
        assert_eq!((d.delay.as_secs(), d.close), (1, false));
    }

    #[test]
    fn failures_from_a_trusted_source_are_tarpitted_but_never_ban() {
        let (auth, guard) = (services(2), guard());
        let ip: IpAddr = "127.0.0.1".parse().expect("literal");
        let now = Instant::now();
        for _ in 0..5 {
            let d = auth.decide(
                &mut SessionAuth::default(),
                ip,
                now,
                Verdict::Invalid,
                &guard,
            );
            assert_eq!(
                (d.outcome, d.delay.as_secs(), d.close),
                (AuthOutcome::Invalid, 1, false)
            );
        }
        assert!(!guard.is_banned(ip, now));
    }

    #[test]
    fn the_source_limit_bans_through_the_guard_and_closes_every_session() {
        let (auth, guard) = (services(2), guard());
        let ip: IpAddr = "2001:db8::1".parse().expect("literal");
        let now = Instant::now();
        let (mut one, mut two) = (SessionAuth::default(), SessionAuth::default());
        assert!(
            !auth
                .decide(&mut one, ip, now, Verdict::Invalid, &guard)
                .close
        );
        let d = auth.decide(&mut two, ip, now, Verdict::Invalid, &guard);
        assert!(d.close, "the failure that bans closes its session");
        assert!(guard.is_banned("2001:db8::99".parse().expect("literal"), now));
        let ok = Verdict::Ok {
            user: "alice@example.test".into(),
        };
        let d = auth.decide(&mut one, ip, now, ok, &guard);
        assert!(matches!(d.outcome, AuthOutcome::Success { .. }));
        assert_eq!((d.delay, d.close), (Duration::ZERO, false));
        let d = auth.decide(&mut one, ip, now, Verdict::Busy, &guard);
        assert_eq!(d.outcome, AuthOutcome::Unavailable);
    }

    #[test]
    fn a_failure_the_guard_does_not_turn_into_a_ban_is_not_reported_as_one() {
        // A PROXY balancer's own connection (a health check, a v1 UNKNOWN header) fails AUTH:
        // the guard refuses to ban the balancer, and the log line must not say it did.
        let auth = services(1);
        let balancer: IpAddr = "10.1.0.9".parse().expect("literal");
        let cfg = ShieldConfig {
            enabled: false,
            ..ShieldConfig::default()
        };
        let guard = Guard::start(
            &cfg,
            &crate::guard::GuardConfig {
                balancers: vec!["10.1.0.0/24".parse().expect("literal")],
                ..crate::guard::GuardConfig::default()
            },
            0,
            1_000,
        )
        .expect("disabled shield always starts");
        let now = Instant::now();
        let d = auth.decide(
            &mut SessionAuth::default(),
            balancer,
            now,
            Verdict::Invalid,
            &guard,
        );
        assert!(!guard.is_banned(balancer, now));
        assert_eq!((d.banned, d.close), (false, false));
    }
}
