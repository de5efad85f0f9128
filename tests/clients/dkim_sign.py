"""Signs the message on stdin with DKIM, as another implementation would: dkimpy (PyPI),
relaxed/relaxed, rsa-sha256. Writes the DKIM-Signature header and the message to stdout.

Usage: dkim_sign.py DOMAIN SELECTOR KEY.pem
"""

import sys

import dkim


def main() -> None:
    domain, selector, key_path = sys.argv[1:4]
    message = sys.stdin.buffer.read()
    with open(key_path, "rb") as f:
        key = f.read()
    signature = dkim.sign(
        message,
        selector.encode(),
        domain.encode(),
        key,
        canonicalize=(b"relaxed", b"relaxed"),
        include_headers=[b"from", b"to", b"subject", b"message-id"],
    )
    sys.stdout.buffer.write(signature + message)


if __name__ == "__main__":
    main()
