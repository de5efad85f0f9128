#!/usr/bin/env python3
"""Sends one message over TLS with Python's smtplib, verifying the server's certificate.

usage: smtplib_tls_send.py starttls|implicit ADDR PORT SERVERNAME CAFILE FROM RCPT < message

`starttls` connects in plaintext and calls `starttls()` (RFC 3207); `implicit` uses `SMTP_SSL`
(RFC 8314). The certificate must chain to CAFILE and be valid for SERVERNAME, which is also sent
as SNI; the TCP connection goes to ADDR (SERVERNAME need not resolve). The message is read from
stdin as bytes and passed to smtplib unchanged (smtplib dot-stuffs it).

Prints one line per step, `<step> <code> <text>`, and `tls <version> <cipher>` once in TLS;
exits 0 only if every step succeeded.
"""
import smtplib
import socket
import ssl
import sys


def main() -> int:
    mode, addr, port, name, cafile, sender, rcpt = sys.argv[1:8]
    port = int(port)
    msg = sys.stdin.buffer.read()
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
    cipher, version, _bits = s.sock.cipher()
    print(f"tls {version} {cipher}")
    with s:
        code, _ = s.ehlo()
        print(f"ehlo {code}")
        ok = code == 250
        code, text = s.mail(sender)
        print(f"mail {code} {text.decode(errors='replace')}")
        ok &= code == 250
        code, text = s.rcpt(rcpt)
        print(f"rcpt {code} {text.decode(errors='replace')}")
        ok &= code == 250
        if not ok:
            return 1
        code, text = s.data(msg)
        print(f"data {code} {text.decode(errors='replace')}")
        ok &= code == 250
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
