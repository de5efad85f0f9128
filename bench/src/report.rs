//! The result of a run, as a table or as one JSON object.

use std::fmt::Write as _;
use std::time::Duration;

use crate::driver::Stats;
use crate::histogram::Histogram;
use crate::options::Options;
use crate::tls::Mode;

/// CPU time of this process (all threads), from `getrusage(RUSAGE_SELF)`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Cpu {
    /// User time.
    pub user: Duration,
    /// System time.
    pub sys: Duration,
}

impl Cpu {
    /// The CPU time used so far.
    pub fn now() -> Cpu {
        // SAFETY: `ru` is a valid out-pointer; zeroed is a valid `rusage`.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let tv = |t: libc::timeval| {
            Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
        };
        Cpu {
            user: tv(ru.ru_utime),
            sys: tv(ru.ru_stime),
        }
    }

    /// CPU used since `earlier`.
    pub fn since(self, earlier: Cpu) -> Cpu {
        Cpu {
            user: self.user.saturating_sub(earlier.user),
            sys: self.sys.saturating_sub(earlier.sys),
        }
    }
}

/// Everything a run produced.
#[derive(Debug)]
pub struct Report<'o> {
    /// What was asked.
    pub options: &'o Options,
    /// Wall time of the load (idle mode: the time to establish every session).
    pub elapsed: Duration,
    /// Measurements.
    pub stats: Stats,
    /// This process's CPU over the run.
    pub cpu: Cpu,
    /// Idle mode: sessions established and held at the peak.
    pub established: Option<usize>,
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

impl Report<'_> {
    fn rate(&self, n: u64) -> f64 {
        n as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }

    fn cpu_total(&self) -> Duration {
        self.cpu.user + self.cpu.sys
    }

    /// Client CPU per accepted message, microseconds (per session with `-m 0`).
    pub fn cpu_per_message_us(&self) -> f64 {
        let n = if self.options.per_session == 0 {
            self.stats.sessions
        } else {
            self.stats.accepted
        };
        us(self.cpu_total()) / n.max(1) as f64
    }

    /// `starttls` or `implicit`, and `resume` or `no-resume`; `none` without TLS.
    fn tls_mode(&self) -> String {
        match &self.options.tls {
            None => "none".into(),
            Some(t) => format!(
                "{}, {}",
                match t.mode {
                    Mode::StartTls => "starttls",
                    Mode::Implicit => "implicit",
                },
                if t.resume { "resume" } else { "no-resume" }
            ),
        }
    }

    /// The human-readable table.
    pub fn text(&self) -> String {
        let o = self.options;
        let s = &self.stats;
        let mut t = String::new();
        let size = if o.size.min == o.size.max {
            format!("{} octets", o.size.min)
        } else {
            format!("{}..{} octets", o.size.min, o.size.max)
        };
        if let Some(held) = self.established {
            let _ = writeln!(
                t,
                "smtp-bench {}: {held} of {} idle sessions established in {:.3} s, held {:.1} s",
                o.server,
                o.idle.unwrap_or(0),
                self.elapsed.as_secs_f64(),
                o.hold.as_secs_f64()
            );
        } else {
            let _ = writeln!(
                t,
                "smtp-bench {}: {} sessions on {} threads, {size}, {} rcpt, {} msg/session, pipelining {}",
                o.server,
                o.sessions,
                o.threads,
                o.rcpts,
                o.per_session,
                if o.pipelining { "on" } else { "off" },
            );
            let _ = writeln!(
                t,
                "messages  {} accepted, {} failed in {:.3} s: {:.1} msg/s, {:.2} MB/s",
                s.accepted,
                s.failed,
                self.elapsed.as_secs_f64(),
                self.rate(s.accepted),
                self.rate(s.bytes) / 1e6
            );
            let _ = writeln!(
                t,
                "sessions  {}: {:.1} sessions/s",
                s.sessions,
                self.rate(s.sessions)
            );
            let lat = |h: &Histogram| {
                format!(
                    "p50 {}  p90 {}  p99 {}  max {}",
                    ms(h.quantile(0.5)),
                    ms(h.quantile(0.9)),
                    ms(h.quantile(0.99)),
                    ms(h.max())
                )
            };
            let _ = writeln!(t, "final reply after DATA  {}", lat(&s.data_latency));
            let _ = writeln!(t, "whole session           {}", lat(&s.session_latency));
            if o.tls.is_some() {
                let groups = s
                    .tls_groups
                    .iter()
                    .map(|(k, v)| format!("{k}: {v}"))
                    .collect::<Vec<_>>()
                    .join(", ");
                let _ = writeln!(
                    t,
                    "tls ({})  {} full ({:.1}/s), {} resumed ({:.1}/s); {groups}",
                    self.tls_mode(),
                    s.tls_full,
                    self.rate(s.tls_full),
                    s.tls_resumed,
                    self.rate(s.tls_resumed),
                );
                let _ = writeln!(t, "tls handshake           {}", lat(&s.tls_handshake));
            }
            if o.auth.is_some() {
                let _ = writeln!(
                    t,
                    "auth      {} ok ({:.1}/s)    {}",
                    s.auth_ok,
                    self.rate(s.auth_ok),
                    lat(&s.auth_latency)
                );
            }
        }
        let errors = if s.errors.is_empty() {
            "none".to_owned()
        } else {
            s.errors
                .iter()
                .map(|(k, v)| format!("{k}: {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let _ = writeln!(t, "errors    {errors}");
        let _ = writeln!(
            t,
            "client CPU {:.3} s user + {:.3} s sys = {:.1} us/{}, {:.0}% of one core",
            self.cpu.user.as_secs_f64(),
            self.cpu.sys.as_secs_f64(),
            self.cpu_per_message_us(),
            if o.per_session == 0 {
                "session"
            } else {
                "message"
            },
            100.0 * self.cpu_total().as_secs_f64() / self.elapsed.as_secs_f64().max(1e-9)
        );
        t
    }

    /// One JSON object (numbers in seconds, microseconds or octets, as the key says).
    pub fn json(&self) -> String {
        let o = self.options;
        let s = &self.stats;
        let lat = |h: &Histogram| {
            format!(
                "{{\"count\":{},\"p50\":{:.1},\"p90\":{:.1},\"p99\":{:.1},\"max\":{:.1}}}",
                h.len(),
                us(h.quantile(0.5)),
                us(h.quantile(0.9)),
                us(h.quantile(0.99)),
                us(h.max())
            )
        };
        let errors = s
            .errors
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect::<Vec<_>>()
            .join(",");
        let groups = s
            .tls_groups
            .iter()
            .map(|(k, v)| format!("{}:{v}", json_str(k)))
            .collect::<Vec<_>>()
            .join(",");
        let tls = format!(
            ",\"tls\":{},\"tls_full\":{},\"tls_resumed\":{},\"tls_full_per_s\":{:.2},\
             \"tls_resumed_per_s\":{:.2},\"tls_handshake_us\":{},\"tls_groups\":{{{groups}}},\
             \"auth_ok\":{},\"auth_per_s\":{:.2},\"auth_latency_us\":{}",
            json_str(&self.tls_mode()),
            s.tls_full,
            s.tls_resumed,
            self.rate(s.tls_full),
            self.rate(s.tls_resumed),
            lat(&s.tls_handshake),
            s.auth_ok,
            self.rate(s.auth_ok),
            lat(&s.auth_latency),
        );
        let idle = match self.established {
            Some(n) => format!(",\"idle\":{},\"established\":{n}", o.idle.unwrap_or(0)),
            None => String::new(),
        };
        format!(
            "{{\"server\":{},\"sessions\":{},\"threads\":{},\"size_min\":{},\"size_max\":{},\
             \"rcpts\":{},\"per_session\":{},\"pipelining\":{}{idle},\"elapsed_s\":{:.6},\
             \"messages_ok\":{},\"messages_failed\":{},\"sessions_done\":{},\"messages_per_s\":{:.2},\
             \"sessions_per_s\":{:.2},\"mb_per_s\":{:.3},\"bytes\":{},\"data_latency_us\":{},\
             \"session_latency_us\":{},\"errors\":{{{errors}}},\"cpu_user_s\":{:.6},\
             \"cpu_sys_s\":{:.6},\"cpu_us_per_message\":{:.2}{tls}}}",
            json_str(&o.server.to_string()),
            o.sessions,
            o.threads,
            o.size.min,
            o.size.max,
            o.rcpts,
            o.per_session,
            o.pipelining,
            self.elapsed.as_secs_f64(),
            s.accepted,
            s.failed,
            s.sessions,
            self.rate(s.accepted),
            self.rate(s.sessions),
            self.rate(s.bytes) / 1e6,
            s.bytes,
            lat(&s.data_latency),
            lat(&s.session_latency),
            self.cpu.user.as_secs_f64(),
            self.cpu.sys.as_secs_f64(),
            self.cpu_per_message_us(),
        )
    }
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}
