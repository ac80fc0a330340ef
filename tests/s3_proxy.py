"""A proxy in front of the real S3 server that a test can make misbehave: it forwards each
request as it came (the signature stays valid) unless `intercept` answered it first."""

from __future__ import annotations

import http.client
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit


def answer_error(handler: BaseHTTPRequestHandler, status: int, body: bytes) -> None:
    """An S3 error document, as the real service sends it."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/xml")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(body)


class S3Proxy:
    def __init__(self, upstream: str) -> None:
        target = urlsplit(upstream)
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args: object) -> None:
                pass

            def _handle(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                if not proxy.intercept(self):
                    _forward(self, target.netloc, body)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def intercept(self, handler: BaseHTTPRequestHandler) -> bool:
        """Answer (or drop) the request instead of the server: True when it did."""
        return False

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _forward(handler: BaseHTTPRequestHandler, netloc: str, body: bytes) -> None:
    upstream = http.client.HTTPConnection(netloc, timeout=60)
    upstream.putrequest(handler.command, handler.path, skip_host=True, skip_accept_encoding=True)
    for key, value in handler.headers.items():
        upstream.putheader(key, value)
    upstream.endheaders(body or None)
    answer = upstream.getresponse()
    data = answer.read()
    handler.send_response(answer.status)
    for key, value in answer.getheaders():
        if key.lower() not in ("content-length", "transfer-encoding", "connection"):
            handler.send_header(key, value)
    # A HEAD answer has no body but tells the size of the object.
    size = answer.getheader("Content-Length") if handler.command == "HEAD" else None
    handler.send_header("Content-Length", size or str(len(data)))
    handler.end_headers()
    if handler.command != "HEAD":
        handler.wfile.write(data)
    upstream.close()
