#!/usr/bin/env python3
"""Verifies the DKIM signature of a message with dkimpy, taking key records from the command
line instead of DNS.

    dkim_verify.py FILE NAME=RECORD...

NAME is the record's owner (`s1._domainkey.example.test`), RECORD its TXT value. Prints `pass`
and exits 0 when the (first) signature verifies; prints `fail` and exits 1 otherwise, and when
the message has no signature or names a record that was not given.
"""

import sys

import dkim


def main():
    path = sys.argv[1]
    records = {}
    for arg in sys.argv[2:]:
        name, record = arg.split("=", 1)
        records[name.lower().rstrip(".")] = record.encode()

    def dnsfunc(name, timeout=5):
        if isinstance(name, bytes):
            name = name.decode()
        return records.get(name.lower().rstrip("."))

    with open(path, "rb") as f:
        message = f.read()
    ok = dkim.verify(message, dnsfunc=dnsfunc)
    print("pass" if ok else "fail")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
