//! Command lines ([RFC 5321 §4.1.1]): verb dispatch and argument syntax.
//!
//! The verb is packed into an integer while it is case-folded, so dispatch is one integer
//! `match`, never a chain of string comparisons.
//!
//! [RFC 5321 §4.1.1]: https://www.rfc-editor.org/rfc/rfc5321#section-4.1.1

use super::reply::Reply;

/// One parsed command; arguments borrow from the line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command<'a> {
    /// `HELO domain`
    Helo(&'a str),
    /// `EHLO domain`
    Ehlo(&'a str),
    /// `MAIL FROM:<path> [params]`: the text after `FROM:`.
    Mail(&'a str),
    /// `RCPT TO:<path> [params]`: the text after `TO:`.
    Rcpt(&'a str),
    /// `DATA`
    Data,
    /// `BDAT size [LAST]` ([RFC 3030 §2]).
    ///
    /// [RFC 3030 §2]: https://www.rfc-editor.org/rfc/rfc3030#section-2
    Bdat {
        /// Octets of message data that follow the command line.
        size: u64,
        /// Whether this is the last chunk.
        last: bool,
    },
    /// `RSET`
    Rset,
    /// `NOOP [string]`
    Noop,
    /// `QUIT`
    Quit,
    /// `VRFY string`
    Vrfy,
    /// `EXPN string`
    Expn,
    /// `HELP [string]`
    Help,
    /// `STARTTLS` (RFC 3207); `has_args` is true when parameters followed it.
    StartTls {
        /// Parameters were given, which RFC 3207 §4 forbids.
        has_args: bool,
    },
    /// `AUTH mechanism [initial-response]` (RFC 4954).
    Auth(&'a str),
}

/// Why a command line was refused; none of these ends the connection by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CommandError {
    /// The verb is unknown.
    Unrecognized,
    /// The verb is known but its arguments are wrong; `usage` shows the expected form.
    Syntax {
        /// The expected form of the command.
        usage: &'static str,
    },
    /// The line is longer than [`super::MAX_COMMAND_LINE`].
    LineTooLong,
    /// The line ended in a bare LF, or holds a bare CR ([RFC 5321 §2.3.8]).
    ///
    /// [RFC 5321 §2.3.8]: https://www.rfc-editor.org/rfc/rfc5321#section-2.3.8
    BareNewline,
    /// The line is not UTF-8.
    NotText,
}

impl CommandError {
    /// The reply this error earns.
    pub fn reply(&self) -> Reply {
        match self {
            CommandError::Unrecognized => Reply::unrecognized("Command unrecognized"),
            CommandError::Syntax { usage } => Reply::syntax(usage),
            CommandError::LineTooLong => {
                Reply::unrecognized("Line too long (RFC 5321 4.5.3.1.4: 512 octets)")
            }
            CommandError::BareNewline => {
                Reply::unrecognized("Bare CR or LF not allowed; lines end in CRLF (RFC 5321 2.3.8)")
            }
            CommandError::NotText => Reply::unrecognized("Invalid characters"),
        }
    }
}

/// Packs up to 8 ASCII letters, lower-cased, into an integer (0 if the verb is longer or not
/// alphabetic, which no command matches).
#[allow(clippy::indexing_slicing)] // `i < verb.len()` is the loop condition; `get` is not const.
const fn token(verb: &[u8]) -> u64 {
    if verb.len() > 8 {
        return 0;
    }
    let mut t = 0u64;
    let mut i = 0;
    while i < verb.len() {
        let b = verb[i];
        if !b.is_ascii_alphabetic() {
            return 0;
        }
        t = (t << 8) | (b.to_ascii_lowercase() as u64);
        i += 1;
    }
    t
}

const HELO: u64 = token(b"helo");
const EHLO: u64 = token(b"ehlo");
const MAIL: u64 = token(b"mail");
const RCPT: u64 = token(b"rcpt");
const DATA: u64 = token(b"data");
const BDAT: u64 = token(b"bdat");
const RSET: u64 = token(b"rset");
const NOOP: u64 = token(b"noop");
const QUIT: u64 = token(b"quit");
const VRFY: u64 = token(b"vrfy");
const EXPN: u64 = token(b"expn");
const HELP: u64 = token(b"help");
const STARTTLS: u64 = token(b"starttls");
const AUTH: u64 = token(b"auth");

/// Strips a case-insensitive ASCII prefix.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| s.get(prefix.len()..))
        .flatten()
}

/// Parses one command line, CRLF already removed.
pub fn parse(line: &[u8]) -> Result<Command<'_>, CommandError> {
    let line = std::str::from_utf8(line).map_err(|_| CommandError::NotText)?;
    let (verb, arg) = match line.split_once(' ') {
        Some((verb, arg)) => (verb, arg.trim_end_matches(' ')),
        None => (line, ""),
    };
    let no_args = |cmd: Command<'static>, usage| {
        if arg.is_empty() {
            Ok(cmd)
        } else {
            Err(CommandError::Syntax { usage })
        }
    };
    match token(verb.as_bytes()) {
        HELO | EHLO if arg.is_empty() || arg.contains(' ') => Err(CommandError::Syntax {
            usage: if token(verb.as_bytes()) == HELO {
                "HELO domain"
            } else {
                "EHLO domain"
            },
        }),
        HELO => Ok(Command::Helo(arg)),
        EHLO => Ok(Command::Ehlo(arg)),
        MAIL => strip_prefix_ci(arg, "FROM:")
            // Postfix and others tolerate a space after the colon; so do we.
            .map(|p| Command::Mail(p.trim_start_matches(' ')))
            .ok_or(CommandError::Syntax {
                usage: "MAIL FROM:<address> [parameters]",
            }),
        RCPT => strip_prefix_ci(arg, "TO:")
            .map(|p| Command::Rcpt(p.trim_start_matches(' ')))
            .ok_or(CommandError::Syntax {
                usage: "RCPT TO:<address> [parameters]",
            }),
        DATA => no_args(Command::Data, "DATA"),
        BDAT => parse_bdat(arg),
        RSET => no_args(Command::Rset, "RSET"),
        NOOP => Ok(Command::Noop),
        QUIT => no_args(Command::Quit, "QUIT"),
        VRFY if arg.is_empty() => Err(CommandError::Syntax {
            usage: "VRFY string",
        }),
        VRFY => Ok(Command::Vrfy),
        EXPN if arg.is_empty() => Err(CommandError::Syntax {
            usage: "EXPN string",
        }),
        EXPN => Ok(Command::Expn),
        HELP => Ok(Command::Help),
        STARTTLS => Ok(Command::StartTls {
            has_args: !arg.is_empty(),
        }),
        AUTH if arg.is_empty() => Err(CommandError::Syntax {
            usage: "AUTH mechanism [initial-response]",
        }),
        AUTH => Ok(Command::Auth(arg)),
        _ => Err(CommandError::Unrecognized),
    }
}

/// The chunk size of a line that begins `BDAT <chunk-size>`, whatever else is wrong with it
/// (an unknown end marker, extra words, a bare LF, invalid UTF-8 after the size). A refused
/// BDAT still carries its octets ([RFC 3030 §2]), so the server must read them as data, never
/// as commands; only a line whose size cannot be read leaves them to the command parser.
///
/// [RFC 3030 §2]: https://www.rfc-editor.org/rfc/rfc3030#section-2
pub fn bdat_chunk_size(line: &[u8]) -> Option<u64> {
    let mut words = line.split(|&b| b == b' ');
    if words.next().map(token) != Some(BDAT) {
        return None;
    }
    let size = words.next()?;
    if size.is_empty() || !size.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(size).ok()?.parse().ok()
}

/// `bdat-cmd = "BDAT" SP chunk-size [ SP end-marker ]` (RFC 3030 §2).
fn parse_bdat(arg: &str) -> Result<Command<'static>, CommandError> {
    const USAGE: CommandError = CommandError::Syntax {
        usage: "BDAT size [LAST]",
    };
    let mut parts = arg.split(' ');
    let size = parts.next().ok_or(USAGE)?;
    // chunk-size = 1*DIGIT; checked parse, so an absurd size is a syntax error, not a wrap.
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) {
        return Err(USAGE);
    }
    let size: u64 = size.parse().map_err(|_| USAGE)?;
    let last = match parts.next() {
        None => false,
        Some(m) if m.eq_ignore_ascii_case("LAST") => true,
        Some(_) => return Err(USAGE),
    };
    if parts.next().is_some() {
        return Err(USAGE);
    }
    Ok(Command::Bdat { size, last })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    #[test]
    fn verbs_are_case_insensitive() {
        // RFC 5321 §2.4: verbs are case-insensitive.
        for line in ["EHLO x", "ehlo x", "EhLo x"] {
            assert_eq!(parse(line.as_bytes()), Ok(Command::Ehlo("x")));
        }
        assert_eq!(parse(b"quit"), Ok(Command::Quit));
    }

    #[test]
    fn table() {
        use Command::*;
        let rows: &[(&str, Result<Command<'_>, CommandError>)] = &[
            ("HELO a.test", Ok(Helo("a.test"))),
            ("EHLO [192.0.2.1]", Ok(Ehlo("[192.0.2.1]"))),
            ("MAIL FROM:<a@b.test>", Ok(Mail("<a@b.test>"))),
            (
                "mail from: <a@b.test> SIZE=5",
                Ok(Mail("<a@b.test> SIZE=5")),
            ),
            ("RCPT TO:<a@b.test>", Ok(Rcpt("<a@b.test>"))),
            ("DATA", Ok(Data)),
            (
                "BDAT 100",
                Ok(Bdat {
                    size: 100,
                    last: false,
                }),
            ),
            (
                "BDAT 0 LAST",
                Ok(Bdat {
                    size: 0,
                    last: true,
                }),
            ),
            ("RSET", Ok(Rset)),
            ("NOOP anything", Ok(Noop)),
            ("VRFY user", Ok(Vrfy)),
            ("HELP", Ok(Help)),
            ("STARTTLS", Ok(StartTls { has_args: false })),
            ("STARTTLS x", Ok(StartTls { has_args: true })),
            ("AUTH PLAIN", Ok(Auth("PLAIN"))),
            ("FOO", Err(CommandError::Unrecognized)),
            ("", Err(CommandError::Unrecognized)),
            (
                "EHLO",
                Err(CommandError::Syntax {
                    usage: "EHLO domain",
                }),
            ),
            (
                "HELO",
                Err(CommandError::Syntax {
                    usage: "HELO domain",
                }),
            ),
            ("DATA x", Err(CommandError::Syntax { usage: "DATA" })),
            ("QUIT now", Err(CommandError::Syntax { usage: "QUIT" })),
        ];
        for (line, want) in rows {
            assert_eq!(&parse(line.as_bytes()), want, "{line:?}");
        }
    }

    #[test]
    fn mail_and_rcpt_need_their_keyword() {
        assert!(matches!(
            parse(b"MAIL <a@b>"),
            Err(CommandError::Syntax { .. })
        ));
        assert!(matches!(
            parse(b"RCPT FROM:<a@b>"),
            Err(CommandError::Syntax { .. })
        ));
    }

    #[test]
    fn bdat_sizes_are_checked() {
        for bad in [
            "BDAT",
            "BDAT -1",
            "BDAT 1x",
            "BDAT 99999999999999999999999",
            "BDAT 1 FIRST",
            "BDAT 1 LAST x",
        ] {
            assert!(
                matches!(parse(bad.as_bytes()), Err(CommandError::Syntax { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_bdat_size_is_read_from_lines_that_do_not_parse() {
        for (line, size) in [
            (&b"BDAT 22 LAST"[..], Some(22)),
            (b"bdat 5 FIRST", Some(5)),
            (b"BDAT 7 LAST extra", Some(7)),
            (b"BDAT 3 \xff", Some(3)),
            (b"BDAT 0", Some(0)),
            (b"BDAT 12\r", None),
            (b"BDAT", None),
            (b"BDAT x", None),
            (b"BDAT -1", None),
            (b"BDAT 99999999999999999999999", None),
            (b"DATA 5", None),
            (b"BDATX 5", None),
        ] {
            assert_eq!(
                bdat_chunk_size(line),
                size,
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }

    #[test]
    fn non_utf8_is_refused() {
        assert_eq!(parse(b"EHLO \xff"), Err(CommandError::NotText));
    }
}
