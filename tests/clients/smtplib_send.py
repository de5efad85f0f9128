#!/usr/bin/env python3
"""Sends one message with Python's smtplib, the way a typical script would.

usage: smtplib_send.py HOST PORT FROM RCPT[,RCPT...] < message

The message is read from stdin as bytes and passed to smtplib unchanged (smtplib dot-stuffs it).
Prints one line per step, `<step> <code> <text>`; exits 0 only if every step succeeded.
"""
import smtplib
import sys


def main() -> int:
    host, port, sender, rcpts = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split(",")
    msg = sys.stdin.buffer.read()
    ok = True
    with smtplib.SMTP(host, port, local_hostname="client.test", timeout=30) as s:
        code, text = s.ehlo()
        print(f"ehlo {code}")
        code, text = s.mail(sender)
        print(f"mail {code} {text.decode(errors='replace')}")
        ok &= code == 250
        for r in rcpts:
            code, text = s.rcpt(r)
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
