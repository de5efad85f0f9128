"""An aiosmtpd receiver for the client engine's tests.

Usage: aiosmtpd_server.py OUT_DIR [CERT KEY]

Listens on 127.0.0.1 on a port the kernel picks and prints "PORT <n>" once it accepts. Refuses
any recipient whose local part starts with "nobody" with 550 5.1.1; stores each accepted message
as OUT_DIR/<n>.eml (the content exactly as received, after unstuffing) with OUT_DIR/<n>.env (the
MAIL parameters on the first line, then one recipient per line). With CERT and KEY it offers
STARTTLS.
"""

import asyncio
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP


class Store:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.split("@")[0].startswith("nobody"):
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.count += 1
        base = os.path.join(self.out_dir, str(self.count))
        with open(base + ".env.tmp", "w") as f:
            f.write(" ".join(envelope.mail_options) + "\n")
            f.write("tls=%s\n" % ("yes" if session.ssl else "no"))
            for rcpt in envelope.rcpt_tos:
                f.write(rcpt + "\n")
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        # The .env file appears last: once it exists, the message is whole.
        os.rename(base + ".env.tmp", base + ".env")
        return "250 2.0.0 Stored as %d" % self.count


async def main():
    out_dir = sys.argv[1]
    tls = None
    if len(sys.argv) > 3:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        tls.load_cert_chain(sys.argv[2], sys.argv[3])
    handler = Store(out_dir)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: SMTP(handler, hostname="mx.example.test", tls_context=tls, decode_data=False),
        "127.0.0.1",
        0,
    )
    port = server.sockets[0].getsockname()[1]
    print("PORT %d" % port, flush=True)
    # Until the test closes our stdin (or kills us).
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main())
