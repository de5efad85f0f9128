"""A scripted next hop for the queue's black-box tests, on aiosmtpd.

Usage: next_hop.py OUT_DIR [--defer-first N] [--reject PREFIX] [--slow-ms N]

Listens on 127.0.0.1 (a port the kernel picks) and prints "PORT <n>" once it accepts.
--defer-first N answers the first N DATA commands with 451 4.3.0, then accepts; --reject PREFIX
answers 550 5.1.1 to every RCPT whose local part starts with PREFIX; --slow-ms N waits N ms
before answering the end of each message. Each accepted message is OUT_DIR/<n>.eml (the content
as received) and OUT_DIR/<n>.rcpt (one recipient per line), written last and atomically;
OUT_DIR/attempts counts DATA commands, accepted or not.
"""

import asyncio
import os
import sys

from aiosmtpd.smtp import SMTP


def write(path, data):
    with open(path + ".tmp", "wb") as f:
        f.write(data)
    os.rename(path + ".tmp", path)


class Handler:
    def __init__(self, out_dir, defer_first, reject, slow_ms):
        self.out_dir, self.defer_left, self.reject, self.slow_ms = out_dir, defer_first, reject, slow_ms
        self.attempts = 0
        self.stored = 0

    async def handle_RCPT(self, server, session, envelope, address, options):
        if self.reject and address.split("@")[0].startswith(self.reject):
            return "550 5.1.1 <%s>: no such user here" % address
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        self.attempts += 1
        write(os.path.join(self.out_dir, "attempts"), b"%d\n" % self.attempts)
        if self.defer_left > 0:
            self.defer_left -= 1
            return "451 4.3.0 try again later"
        if self.slow_ms:
            await asyncio.sleep(self.slow_ms / 1000.0)
        self.stored += 1
        base = os.path.join(self.out_dir, str(self.stored))
        write(base + ".eml", envelope.original_content)
        write(base + ".rcpt", "".join(r + "\n" for r in envelope.rcpt_tos).encode())
        return "250 2.0.0 stored as %d" % self.stored


def main():
    out_dir, args = sys.argv[1], sys.argv[2:]
    opts = {"--defer-first": 0, "--reject": None, "--slow-ms": 0}
    while args:
        key, value = args[0], args[1]
        if key not in opts:
            raise SystemExit("unknown argument %r" % key)
        opts[key] = value if key == "--reject" else int(value)
        args = args[2:]
    handler = Handler(out_dir, opts["--defer-first"], opts["--reject"], opts["--slow-ms"])

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="next-hop.test", decode_data=False), "127.0.0.1", 0
        )
        print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
        # Until the test closes our stdin (or kills us).
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


main()
