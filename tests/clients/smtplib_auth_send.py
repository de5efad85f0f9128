#!/usr/bin/env python3
"""Logs in over TLS with Python's smtplib and sends one message with `send_message()`.

usage: smtplib_auth_send.py starttls|implicit ADDR PORT SERVERNAME CAFILE USER PASSWORD < message

`starttls` connects in plaintext, checks that AUTH is *not* offered before TLS, and calls
`starttls()` (RFC 3207); `implicit` uses `SMTP_SSL` (RFC 8314). The certificate must chain to
CAFILE and be valid for SERVERNAME (also sent as SNI); the TCP connection goes to ADDR. Then
`login(USER, PASSWORD)` (smtplib picks the mechanism from the EHLO AUTH line) and
`send_message()` of the message read from stdin: smtplib takes the envelope from its From:, To:
and Cc: headers.

Prints one line per step, `<step> <code> <text>`: `auth-before-tls <offered mechanisms>`,
`auth <mechanisms>` (the EHLO AUTH line inside TLS), `login <code> <text>`, `sent <refused>`.
Exit status: 0 if every step succeeded, 3 if the login was refused (after printing
`login <code> <text>`), 1 on any other failure.
"""
import email
import email.policy
import smtplib
import socket
import ssl
import sys


def main() -> int:
    mode, addr, port, name, cafile, user, password = sys.argv[1:8]
    port = int(port)
    raw = sys.stdin.buffer.read()
    # compat32 keeps header values and the body as they were read, so send_message() puts the
    # same bytes on the wire (dot-stuffed by smtplib).
    msg = email.message_from_bytes(raw, policy=email.policy.compat32)
    ctx = ssl.create_default_context(cafile=cafile)  # CERT_REQUIRED, check_hostname

    def connect(timeout, source_address):
        return socket.create_connection((addr, port), timeout, source_address)

    class Plain(smtplib.SMTP):
        def _get_socket(self, host, port_, timeout):
            return connect(timeout, self.source_address)

    class Implicit(smtplib.SMTP_SSL):
        def _get_socket(self, host, port_, timeout):
            return self.context.wrap_socket(
                connect(timeout, self.source_address), server_hostname=self._host
            )

    if mode == "starttls":
        s = Plain(name, port, local_hostname="client.test", timeout=30)
        code, _ = s.ehlo()
        print(f"ehlo {code}")
        print(f"auth-before-tls {s.esmtp_features.get('auth', '').strip()}")
        if not s.has_extn("starttls"):
            print(f"no STARTTLS in EHLO: {s.esmtp_features}")
            return 1
        code, text = s.starttls(context=ctx)
        print(f"starttls {code} {text.decode(errors='replace')}")
        if code != 220:
            return 1
    elif mode == "implicit":
        s = Implicit(name, port, local_hostname="client.test", timeout=30, context=ctx)
    else:
        print(f"unknown mode {mode}")
        return 2
    with s:
        code, _ = s.ehlo()
        print(f"ehlo {code}")
        print(f"auth {s.esmtp_features.get('auth', '').strip()}")
        try:
            code, text = s.login(user, password)
        except smtplib.SMTPAuthenticationError as e:
            print(f"login {e.smtp_code} {e.smtp_error.decode(errors='replace')}")
            return 3
        print(f"login {code} {text.decode(errors='replace')}")
        if code != 235:
            return 1
        try:
            refused = s.send_message(msg)
        except smtplib.SMTPException as e:
            print(f"send-error {type(e).__name__} {e}")
            return 1
        print(f"sent {refused}")
        if refused:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
