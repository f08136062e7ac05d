#!/usr/bin/env python3
"""localstripe (a stateful fake Stripe that sends signed webhooks) for the test harness.

    .venv/bin/python infra/localstripe_server.py [--host 127.0.0.1] [--port 0] [--exit-on-stdin-eof]

Serves localstripe's own aiohttp application unchanged, with two differences from its
``localstripe`` command, both about running beside other processes rather than about Stripe:
it never reads or writes ``/tmp/localstripe.pickle`` (a file every localstripe on the machine
shares), and it listens on the given host and port, ``--port 0`` picking a free one. Prints exactly
one line, ``ready http://HOST:PORT``, once it accepts connections; with ``--exit-on-stdin-eof`` it
exits when standard input closes, so it never outlives the test binary that started it.
"""

import argparse
import asyncio
import socket
import sys

from aiohttp import web
from localstripe import resources, server


async def main(host: str, port: int, exit_on_stdin_eof: bool) -> None:
    # State lives in memory only: one process per test binary, nothing shared on disk.
    resources.store.dump_to_disk = lambda: None

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    runner = web.AppRunner(server.app, access_log=None)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    print(f"ready http://{host}:{sock.getsockname()[1]}", flush=True)

    loop = asyncio.get_running_loop()
    if exit_on_stdin_eof:
        await loop.run_in_executor(None, sys.stdin.read)
    else:
        await asyncio.Event().wait()
    await runner.cleanup()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    args = parser.parse_args()
    try:
        asyncio.run(main(args.host, args.port, args.exit_on_stdin_eof))
    except KeyboardInterrupt:
        pass
