#!/usr/bin/env python3
"""Local AWS emulator: moto's server (DynamoDB, SQS, KMS, ...) in this process.

    .venv/bin/python infra/emulator.py [--host 127.0.0.1] [--port 4566] [--exit-on-stdin-eof] [--verbose]

Prints exactly one line, ``ready http://HOST:PORT``, to stdout (flushed) once the server accepts
connections; ``--port 0`` picks a free port, and the line names it. Exits with status 0 on SIGTERM,
SIGINT, and -- with ``--exit-on-stdin-eof`` -- when standard input reaches end of file: a parent
(e.g. a test binary) keeps the pipe open for as long as it lives, so the emulator can never outlive
it. Exits non-zero if the port cannot be bound. Request logs go to stderr only with ``--verbose``
(a parent that pipes stderr without reading it must not stall the server).
"""

import argparse
import logging
import signal
import socket
import sys
import threading

from moto.server import ThreadedMotoServer


class _Server(ThreadedMotoServer):
    """ThreadedMotoServer whose start() fails instead of hanging when the port cannot be bound."""

    error = None

    def _server_entry(self):
        try:
            super()._server_entry()
        except BaseException as exc:  # noqa: BLE001 - reported by start()
            self.error = exc
            self._server_ready_event.set()


def serialize_dynamodb() -> None:
    """Make each DynamoDB request atomic, as it is in AWS.

    moto's threaded server handles requests concurrently, and its TransactWriteItems copies the
    tables it touches and restores those copies when a condition fails -- erasing whatever other
    threads wrote meanwhile, and letting two transactions pass the same condition. One lock around
    DynamoDB's request handler serializes DynamoDB requests (SQS and KMS stay concurrent: SQS
    long polls must not block anything).
    """
    from moto.dynamodb.responses import DynamoHandler

    lock = threading.RLock()
    call_action = DynamoHandler.call_action

    def locked_call_action(self):  # type: ignore[no-untyped-def]
        with lock:
            return call_action(self)

    DynamoHandler.call_action = locked_call_action


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=4566)
    parser.add_argument("--exit-on-stdin-eof", action="store_true")
    parser.add_argument("--verbose", action="store_true", help="log every request to stderr")
    args = parser.parse_args()

    logging.getLogger("werkzeug").setLevel(logging.INFO if args.verbose else logging.WARNING)

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    serialize_dynamodb()
    server = _Server(args.host, args.port, verbose=False)
    server.start()
    if server.error is not None:
        print(f"emulator: cannot serve on {args.host}:{args.port}: {server.error}", file=sys.stderr)
        return 1
    host, port = server.get_host_and_port()

    # make_server() has bound and is listening; confirm with a real connection before "ready".
    with socket.create_connection((host, port), timeout=5):
        pass
    url_host = f"[{host}]" if ":" in host else host
    print(f"ready http://{url_host}:{port}", flush=True)

    if args.exit_on_stdin_eof:

        def watch_stdin():
            try:
                while sys.stdin.buffer.read1(65536):
                    pass
            except (OSError, ValueError):
                pass
            stop.set()

        threading.Thread(target=watch_stdin, daemon=True).start()

    while not stop.wait(1.0):
        pass
    server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
