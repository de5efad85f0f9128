"""An aiosmtpd receiver for the relay's tests.

Usage: receiver.py OUT_DIR HOST PORT [--tls CERT KEY] [--tls-1.1-only] [--auth USER PASSWORD]
                   [--slow-ms N]

Listens on HOST:PORT (PORT 0: the kernel picks) and prints "PORT <n>" once it accepts.
Recipients whose local part starts with "nobody" get 550 5.1.1, "later" 451 4.2.0. Each
accepted message is stored as OUT_DIR/<n>.eml (the content exactly as received, after
unstuffing) with OUT_DIR/<n>.env, written last: "peer <ip> <port>", "tls yes|no",
"auth <login>|-", "mail <parameters>", then "rcpt <address>" per recipient. OUT_DIR/connections
holds "<total> <most at once> <open now>" and is replaced whenever a connection opens or
closes. With --tls it
offers STARTTLS (with --tls-1.1-only, at most TLS 1.1, which no current client completes);
with --auth it offers AUTH (inside TLS only) for that one user; with
--slow-ms each DATA is answered after that delay.
"""

import asyncio
import os
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def atomic_write(path, text):
    with open(path + ".tmp", "w") as f:
        f.write(text)
    os.rename(path + ".tmp", path)


class Stats:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.total = 0
        self.active = 0
        self.most = 0

    def opened(self):
        self.total += 1
        self.active += 1
        self.most = max(self.most, self.active)
        self.write()

    def closed(self):
        self.active -= 1
        self.write()

    def write(self):
        atomic_write(
            os.path.join(self.out_dir, "connections"),
            "%d %d %d\n" % (self.total, self.most, self.active),
        )


class Store:
    def __init__(self, out_dir, slow):
        self.out_dir = out_dir
        self.count = 0
        self.slow = slow
        self.logins = {}

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local.startswith("nobody"):
            return "550 5.1.1 No such user here"
        if local.startswith("later"):
            return "451 4.2.0 Try again later"
        envelope.rcpt_tos.append(address)
        return "250 2.1.5 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.slow:
            await asyncio.sleep(self.slow / 1000.0)
        self.count += 1
        base = os.path.join(self.out_dir, str(self.count))
        with open(base + ".eml", "wb") as f:
            f.write(envelope.original_content)
        lines = [
            "peer %s %d" % (session.peer[0], session.peer[1]),
            "tls %s" % ("yes" if session.ssl else "no"),
            "auth %s" % self.logins.get(session.peer, "-"),
            "mail %s" % " ".join(envelope.mail_options),
        ] + ["rcpt %s" % r for r in envelope.rcpt_tos]
        atomic_write(base + ".env", "\n".join(lines) + "\n")
        return "250 2.0.0 Stored as %d" % self.count


def main():
    out_dir, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
    args = sys.argv[4:]
    tls = None
    auth = None
    slow = 0
    while args:
        if args[0] == "--tls":
            tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            tls.load_cert_chain(args[1], args[2])
            args = args[3:]
        elif args[0] == "--tls-1.1-only":
            tls.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
            tls.maximum_version = ssl.TLSVersion.TLSv1_1
            args = args[1:]
        elif args[0] == "--auth":
            auth = (args[1].encode(), args[2].encode())
            args = args[3:]
        elif args[0] == "--slow-ms":
            slow = int(args[1])
            args = args[2:]
        else:
            raise SystemExit("unknown argument %r" % args[0])
    stats = Stats(out_dir)
    handler = Store(out_dir, slow)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == auth
        if ok:
            handler.logins[session.peer] = auth_data.login.decode()
        return AuthResult(success=ok)

    class Counting(SMTP):
        def connection_made(self, transport):
            # Called again with the TLS transport after STARTTLS: count the TCP connection once.
            if transport.get_extra_info("ssl_object") is None:
                stats.opened()
            super().connection_made(transport)

        def connection_lost(self, exc):
            super().connection_lost(exc)
            stats.closed()

    def factory():
        kwargs = dict(hostname="mx.example.test", tls_context=tls, decode_data=False)
        if auth is not None:
            kwargs.update(authenticator=authenticator, auth_require_tls=True)
        return Counting(handler, **kwargs)

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(factory, host, port)
        print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
        # Until the test closes our stdin (or kills us).
        await loop.run_in_executor(None, sys.stdin.read)

    asyncio.run(serve())


main()
