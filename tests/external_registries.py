"""Real registries on loopback to check, for the tests of registry verification.

CNCF distribution (Debian's `docker-registry`) with htpasswd or token auth, a small token
server for the latter (the JWTs distribution takes: ES256 with the signing certificate in
the `x5c` header, which Dockyard's own tokens do not carry), and two misbehaving servers:
one that accepts connections and never answers, one that answers with a redirect.
"""

from __future__ import annotations

import base64
import datetime
import ipaddress
import json
import secrets
import shutil
import socket
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests.conftest import require_or_skip
from tests.support import free_port

DISTRIBUTION = "/usr/bin/docker-registry"
SERVICE = "test-registry"
ISSUER = "test-token-issuer"


def distribution_binary() -> str:
    found = shutil.which("docker-registry") or (
        DISTRIBUTION if Path(DISTRIBUTION).exists() else None
    )
    if found is None:
        require_or_skip("docker-registry (Debian's CNCF distribution) is not installed")
    assert found is not None
    return found


def htpasswd_line(username: str, password: str) -> str:
    """A bcrypt htpasswd entry, made by apache2-utils' htpasswd as an operator would."""
    tool = shutil.which("htpasswd")
    if tool is None:
        require_or_skip("htpasswd (apache2-utils) is not installed")
    assert tool is not None
    done = subprocess.run(
        [tool, "-Bbn", username, password], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def self_signed(
    common_name: str, addresses: list[str] | None = None
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if addresses:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses]
            ),
            critical=False,
        )
    return key, builder.sign(key, hashes.SHA256())


def write_pem(path: Path, key: ec.EllipticCurvePrivateKey | None, cert: x509.Certificate) -> Path:
    if key is not None:
        path.with_suffix(".key").write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class Distribution:
    host: str  # host:port, as a registry's hostname
    process: subprocess.Popen[bytes]
    log_path: Path

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def start_distribution(
    workdir: Path,
    auth: dict[str, object],
    *,
    address: str = "127.0.0.1",
    tls: bool = False,
    port: int | None = None,
) -> Distribution:
    """`docker-registry serve` with the given `auth:` section, on a free port by default."""
    binary = distribution_binary()
    workdir.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    http: dict[str, object] = {"addr": f"{address}:{port}", "secret": secrets.token_hex(16)}
    if tls:
        key, cert = self_signed(address, [address])
        pem = write_pem(workdir / "tls.pem", key, cert)
        http["tls"] = {"certificate": str(pem), "key": str(pem.with_suffix(".key"))}
    config = {
        "version": 0.1,
        "log": {"level": "info"},
        "storage": {"filesystem": {"rootdirectory": str(workdir / "storage")}},
        "http": http,
        "auth": auth,
    }
    # JSON is YAML: no YAML writer needed.
    (workdir / "config.yml").write_text(json.dumps(config))
    log_path = workdir / "registry.log"
    process = subprocess.Popen(
        [binary, "serve", str(workdir / "config.yml")],
        stdout=log_path.open("ab"),
        stderr=subprocess.STDOUT,
    )
    scheme = "https" if tls else "http"
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"docker-registry exited:\n{log_path.read_text()}")
        try:
            httpx.get(f"{scheme}://{address}:{port}/v2/", timeout=1, verify=False)
            return Distribution(f"{address}:{port}", process, log_path)
        except httpx.HTTPError:
            time.sleep(0.05)
    process.terminate()
    raise RuntimeError(f"docker-registry did not answer:\n{log_path.read_text()}")


# -- small servers -------------------------------------------------------------------------


@dataclass
class Seen:
    """What a small server was asked: path, query and Authorization of each request."""

    requests: list[tuple[str, dict[str, list[str]], str | None]] = field(default_factory=list)


class _Quiet(BaseHTTPRequestHandler):
    def log_message(self, format: str, *args: object) -> None:
        pass


@dataclass
class SmallServer:
    server: ThreadingHTTPServer
    seen: Seen

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _serve(
    handler: type[BaseHTTPRequestHandler], address: str = "127.0.0.1"
) -> ThreadingHTTPServer:
    server = ThreadingHTTPServer((address, 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def start_token_server(
    workdir: Path, username: str, password: str
) -> tuple[SmallServer, Path, list[str]]:
    """A token service as distribution's token auth wants one: Basic auth of one user, an
    ES256 JWT signed by a self-signed certificate (returned as a PEM bundle for
    `rootcertbundle`). The third value lists every token it issued."""
    key, cert = self_signed("token signer")
    x5c = base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()
    expected = "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode()
    seen, issued = Seen(), []

    class Handler(_Quiet):
        def do_GET(self) -> None:
            url = urlsplit(self.path)
            query = parse_qs(url.query)
            authorization = self.headers.get("Authorization")
            seen.requests.append((url.path, query, authorization))
            if authorization != expected:
                self.send_response(401)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"details":"wrong username or password"}')
                return
            now = int(time.time())
            claims = {
                "iss": ISSUER,
                "sub": username,
                "aud": query.get("service", [""])[0],
                "exp": now + 300,
                "nbf": now - 10,
                "iat": now,
                "jti": secrets.token_hex(8),
                "access": [],
            }
            token = jwt.encode(claims, key, algorithm="ES256", headers={"x5c": [x5c]})
            issued.append(token)
            body = json.dumps({"token": token, "expires_in": 300}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = SmallServer(_serve(Handler), seen)
    workdir.mkdir(parents=True, exist_ok=True)
    return server, write_pem(workdir / "token-signer.pem", None, cert), issued


def start_redirector(location: str) -> SmallServer:
    """A "registry" that asks for Basic auth, then sends whoever logs in to `location`."""
    seen = Seen()

    class Handler(_Quiet):
        def do_GET(self) -> None:
            authorization = self.headers.get("Authorization")
            seen.requests.append((self.path, {}, authorization))
            if authorization is None:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="r"')
            else:
                self.send_response(302)
                self.send_header("Location", location)
            self.send_header("Content-Length", "0")
            self.end_headers()

    return SmallServer(_serve(Handler), seen)


def start_recorder(address: str = "127.0.0.1") -> SmallServer:
    """Answers 200 to anything, and remembers what it was asked."""
    seen = Seen()

    class Handler(_Quiet):
        def do_GET(self) -> None:
            seen.requests.append((self.path, {}, self.headers.get("Authorization")))
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"{}")

    return SmallServer(_serve(Handler, address), seen)


class SilentServer:
    """Accepts connections and never says a word: a registry host that hangs."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.accepted: list[socket.socket] = []
        self.hung_up = False
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.accepted.append(conn)
            if self.hung_up:
                conn.close()

    def hang_up(self) -> None:
        """Closes the connections made so far, and every one made from now on."""
        self.hung_up = True
        for conn in self.accepted:
            conn.close()

    def stop(self) -> None:
        self.sock.close()
        self.hang_up()
