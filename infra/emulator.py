#!/usr/bin/env python3
"""Local AWS emulator: moto (DynamoDB, SQS, KMS, ...) served by waitress in this process.

    .venv/bin/python infra/emulator.py [--host 127.0.0.1] [--port 4566] [--exit-on-stdin-eof] [--verbose]
                                       [--latency dynamodb=4,sqs=8,kms=6]

Prints exactly one line, ``ready http://HOST:PORT``, to stdout (flushed) once the server accepts
connections; ``--port 0`` picks a free port, and the line names it. Exits with status 0 on SIGTERM,
SIGINT, and -- with ``--exit-on-stdin-eof`` -- when standard input reaches end of file: a parent
(e.g. a test binary) keeps the pipe open for as long as it lives, so the emulator can never outlive
it. Exits non-zero if the port cannot be bound. Request logs go to stderr only with ``--verbose``
(a parent that pipes stderr without reading it must not stall the server).

``--latency SERVICE=MS,...`` adds a fixed delay, in milliseconds, before each answer of a service
(``dynamodb``, ``dynamodbstreams``, ``sqs``, ``kms``; default none): loopback answers in a fraction of
a millisecond, AWS in-region in milliseconds, and a benchmark of wall time (what Lambda bills) needs
the latter to count sequential round trips (``make bench``, README "Performance"). The delay is slept
outside the DynamoDB lock below, so concurrent requests wait concurrently, as they do in AWS.
"""

import argparse
import logging
import os
import signal
import socket
import sys
import threading
import time
import urllib.parse

from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from waitress.server import create_server

# Worker threads: SQS long polls (up to 20 s each) hold one, so keep plenty for parallel tests.
THREADS = 64
# Parallel test stacks each keep a pool of idle keep-alive connections.
CONNECTION_LIMIT = 2000


def log_requests(app):
    """WSGI middleware: one stderr line per request (--verbose; waitress keeps no access log)."""

    def logged(environ, start_response):
        def start(status, headers, exc_info=None):
            target = environ.get("HTTP_X_AMZ_TARGET") or environ.get("PATH_INFO", "")
            print(f"emulator: {environ['REQUEST_METHOD']} {target} -> {status}", file=sys.stderr)
            return start_response(status, headers, exc_info)

        return app(environ, start)

    return logged


# X-Amz-Target prefixes of the JSON protocols, by service.
TARGET_PREFIXES = {
    "DynamoDB_20120810": "dynamodb",
    "DynamoDBStreams_20120810": "dynamodbstreams",
    "AmazonSQS": "sqs",
    "TrentService": "kms",
}
SERVICES = frozenset(TARGET_PREFIXES.values())


def parse_latency(spec: str) -> dict:
    """``"dynamodb=4,sqs=8"`` -> ``{"dynamodb": 0.004, "sqs": 0.008}`` (seconds); ValueError names
    what is wrong."""
    out = {}
    for part in filter(None, (p.strip() for p in spec.split(","))):
        service, sep, ms = part.partition("=")
        service = service.strip().lower()
        if not sep or service not in SERVICES:
            raise ValueError(f"{part!r}: expected SERVICE=MS with SERVICE one of {sorted(SERVICES)}")
        value = float(ms)
        if not 0 <= value <= 60_000:
            raise ValueError(f"{part!r}: milliseconds must be between 0 and 60000")
        out[service] = value / 1000
    return out


def service_of(environ) -> str | None:
    """The AWS service a request is addressed to: the JSON protocols' ``X-Amz-Target`` prefix, else
    the SigV4 credential scope (``Credential=KEY/DATE/REGION/SERVICE/aws4_request``), else -- SQS's
    query protocol -- an ``Action`` in the query string with a ``QueueUrl`` or a queue action."""
    target = environ.get("HTTP_X_AMZ_TARGET", "")
    if target:
        return TARGET_PREFIXES.get(target.split(".", 1)[0])
    auth = environ.get("HTTP_AUTHORIZATION", "")
    if "Credential=" in auth:
        scope = auth.split("Credential=", 1)[1].split(",", 1)[0].split("/")
        if len(scope) >= 5 and scope[3] in SERVICES:
            return scope[3]
    query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
    action = (query.get("Action") or [""])[0]
    if action and ("QueueUrl" in query or "Queue" in action or "Message" in action):
        return "sqs"
    return None


def latency_arg(spec: str) -> dict:
    """argparse type for --latency: its error message reaches the user."""
    try:
        return parse_latency(spec)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def with_latency(app, latency: dict):
    """WSGI middleware: sleeps ``latency[service]`` seconds before handing a request to moto."""

    def delayed(environ, start_response):
        delay = latency.get(service_of(environ) or "")
        if delay:
            time.sleep(delay)
        return app(environ, start_response)

    return delayed


def serve(host: str, port: int, verbose: bool, latency: dict | None = None):
    """moto's WSGI application under waitress, which keeps HTTP/1.1 connections alive.

    moto's own ThreadedMotoServer runs werkzeug's development server, which answers every request
    with `Connection: close`: each SDK call would then pay a new TCP connection (and, in hyper, an
    address lookup on a blocking thread) that a deployed function, talking to DynamoDB over kept-alive
    connections, never pays. With waitress the local stack costs clients what AWS costs them, so the
    benchmarks (SPEC section 9) measure the handler, not the emulator's connection handling.
    """
    app = DomainDispatcherApplication(create_backend_app)
    if latency:
        app = with_latency(app, latency)
    if verbose:
        app = log_requests(app)
    return create_server(
        app,
        host=host,
        port=port,
        threads=THREADS,
        connection_limit=CONNECTION_LIMIT,
        asyncore_use_poll=True,  # select() cannot watch descriptors above 1024
        channel_timeout=300,
        ident="moto",
    )


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
    parser.add_argument(
        "--latency",
        type=latency_arg,
        default={},
        metavar="SERVICE=MS,...",
        help="milliseconds slept before each answer, per service, e.g. dynamodb=4,sqs=8,kms=6",
    )
    args = parser.parse_args()

    logging.getLogger("waitress").setLevel(logging.ERROR)  # e.g. "task queue depth" warnings

    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())

    serialize_dynamodb()
    try:
        server = serve(args.host, args.port, args.verbose, args.latency)
    except OSError as exc:
        print(f"emulator: cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    host, port = server.socket.getsockname()[:2]
    # The server thread is a daemon: returning from main() ends it with the process.
    threading.Thread(target=server.run, name="waitress", daemon=True).start()

    # The socket is bound and listening; confirm with a real connection before "ready".
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
    # Leave at once: waitress's worker threads may be busy with requests from a parent that is
    # gone (seen: a long moto transaction kept an orphaned emulator alive), and nothing needs an
    # orderly shutdown -- the emulator's state lives in memory only.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


if __name__ == "__main__":
    sys.exit(main())
