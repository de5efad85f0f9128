#!/usr/bin/env python3
"""Sends one message with Python's smtplib, the way a typical script would, in plaintext or over
TLS, with or without logging in.

usage: smtplib_send.py [--tls starttls|implicit --servername NAME --cafile CAFILE]
                       [--login USER PASSWORD] HOST PORT [FROM RCPT[,RCPT...]] < message

The message is read from stdin as bytes and passed to smtplib unchanged (smtplib dot-stuffs it).

`--tls starttls` connects in plaintext and calls `starttls()` (RFC 3207); `--tls implicit` uses
`SMTP_SSL` (RFC 8314). The certificate must chain to CAFILE and be valid for NAME, which is also
sent as SNI; the TCP connection goes to HOST (NAME need not resolve).

Without `--login`, the message goes with `mail()`, `rcpt()` and `data()` from FROM to each RCPT.
With `--login`, `login(USER, PASSWORD)` (smtplib picks the mechanism from the EHLO AUTH line) and
`send_message()`: smtplib takes the envelope from the From:, To: and Cc: headers.

Prints one line per step, `<step> <code> <text>`; `tls <version> <cipher>` once in TLS; with
`--login`, `auth-before-tls <offered mechanisms>` (STARTTLS only), `auth <mechanisms>` (the EHLO
AUTH line inside TLS) and `sent <refused>`. Exit status: 0 if every step succeeded, 3 if the
login was refused (after printing `login <code> <text>`), 1 on any other failure.
"""
import argparse
import email
import email.policy
import smtplib
import socket
import ssl
import sys


def text(t: bytes) -> str:
    return t.decode(errors="replace")


def tls_session(args):
    """Connects in TLS as `--tls` says; returns the session, or None on failure."""
    ctx = ssl.create_default_context(cafile=args.cafile)  # CERT_REQUIRED, check_hostname

    def connect(timeout, source_address):
        return socket.create_connection((args.host, args.port), timeout, source_address)

    class Plain(smtplib.SMTP):
        def _get_socket(self, host, port_, timeout):
            return connect(timeout, self.source_address)

    class Implicit(smtplib.SMTP_SSL):
        def _get_socket(self, host, port_, timeout):
            return self.context.wrap_socket(
                connect(timeout, self.source_address), server_hostname=self._host
            )

    if args.tls == "implicit":
        return Implicit(
            args.servername, args.port, local_hostname="client.test", timeout=30, context=ctx
        )
    s = Plain(args.servername, args.port, local_hostname="client.test", timeout=30)
    code, _ = s.ehlo()
    print(f"ehlo {code}")
    if args.login:
        print(f"auth-before-tls {s.esmtp_features.get('auth', '').strip()}")
    if not s.has_extn("starttls"):
        print(f"no STARTTLS in EHLO: {s.esmtp_features}")
        return None
    code, t = s.starttls(context=ctx)
    print(f"starttls {code} {text(t)}")
    return s if code == 220 else None


def login_send(s, user, password, raw: bytes) -> int:
    print(f"auth {s.esmtp_features.get('auth', '').strip()}")
    try:
        code, t = s.login(user, password)
    except smtplib.SMTPAuthenticationError as e:
        print(f"login {e.smtp_code} {text(e.smtp_error)}")
        return 3
    print(f"login {code} {text(t)}")
    if code != 235:
        return 1
    # compat32 keeps header values and the body as they were read, so send_message() puts the
    # same bytes on the wire (dot-stuffed by smtplib).
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    try:
        refused = s.send_message(msg)
    except smtplib.SMTPException as e:
        print(f"send-error {type(e).__name__} {e}")
        return 1
    print(f"sent {refused}")
    return 1 if refused else 0


def envelope_send(s, sender, rcpts, msg: bytes) -> int:
    code, t = s.mail(sender)
    print(f"mail {code} {text(t)}")
    ok = code == 250
    for r in rcpts:
        code, t = s.rcpt(r)
        print(f"rcpt {code} {text(t)}")
        ok &= code == 250
    if not ok:
        return 1
    code, t = s.data(msg)
    print(f"data {code} {text(t)}")
    return 0 if code == 250 else 1


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--tls", choices=["starttls", "implicit"])
    p.add_argument("--servername")
    p.add_argument("--cafile")
    p.add_argument("--login", nargs=2, metavar=("USER", "PASSWORD"))
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("sender", nargs="?")
    p.add_argument("rcpts", nargs="?")
    args = p.parse_args()
    if args.login is None and args.rcpts is None:
        p.error("FROM and RCPT are needed without --login")
    msg = sys.stdin.buffer.read()

    if args.tls is None:
        s = smtplib.SMTP(args.host, args.port, local_hostname="client.test", timeout=30)
    else:
        s = tls_session(args)
        if s is None:
            return 1
        cipher, version, _bits = s.sock.cipher()
        print(f"tls {version} {cipher}")
    with s:
        code, _ = s.ehlo()
        print(f"ehlo {code}")
        if args.login:
            return login_send(s, *args.login, msg)
        if code != 250:
            return 1
        return envelope_send(s, args.sender, args.rcpts.split(","), msg)


if __name__ == "__main__":
    sys.exit(main())
