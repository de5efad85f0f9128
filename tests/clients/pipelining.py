#!/usr/bin/env python3
"""A PIPELINING client (RFC 2920): smtplib for the greeting and EHLO, then one raw write.

usage: pipelining.py HOST PORT FROM RCPT1 RCPT2 < message

smtplib never pipelines, so after EHLO advertises PIPELINING this writes
`MAIL FROM`, `RCPT TO` x2 and `DATA` in a single sendall() and then reads the replies, which must
come back one per command, in order. Then it sends the dot-stuffed message and `.`, and QUIT.
Prints one line per reply, `reply <code> <text>`; exits 0 only if the replies were
250, 250, 250, 354, then 250 for the message and 221 for QUIT.
"""
import smtplib
import sys


def dot_stuff(msg: bytes) -> bytes:
    lines = msg.split(b"\r\n")
    return b"\r\n".join(b"." + l if l.startswith(b".") else l for l in lines)


def main() -> int:
    host, port, sender, r1, r2 = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
    msg = sys.stdin.buffer.read()
    assert msg.endswith(b"\r\n"), "message must end with CRLF"
    s = smtplib.SMTP(host, port, local_hostname="client.test", timeout=30)
    code, _ = s.ehlo()
    if code != 250 or not s.has_extn("pipelining"):
        print(f"EHLO {code} does not advertise PIPELINING: {s.esmtp_features}")
        return 1
    batch = (
        f"MAIL FROM:<{sender}>\r\nRCPT TO:<{r1}>\r\nRCPT TO:<{r2}>\r\nDATA\r\n".encode()
    )
    s.sock.sendall(batch)
    codes = []
    for _ in range(4):
        code, text = s.getreply()
        print(f"reply {code} {text.decode(errors='replace')}")
        codes.append(code)
    if codes != [250, 250, 250, 354]:
        print(f"batch replies {codes}, want [250, 250, 250, 354]")
        return 1
    s.sock.sendall(dot_stuff(msg) + b".\r\n")
    code, text = s.getreply()
    print(f"reply {code} {text.decode(errors='replace')}")
    codes.append(code)
    code, text = s.docmd("QUIT")
    print(f"reply {code} {text.decode(errors='replace')}")
    codes.append(code)
    s.close()
    return 0 if codes == [250, 250, 250, 354, 250, 221] else 1


if __name__ == "__main__":
    sys.exit(main())
