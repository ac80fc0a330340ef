"""One check of an external registry: `GET /v2/`, then the login it is challenged for.

As `docker login` does it: a `Basic` challenge is answered with the stored username and
password; a `Bearer realm=...,service=...` one by fetching a token from the realm with them
(Basic auth on the token request, `service` as a parameter) and asking `/v2/` again with it.

What the result says, and nothing more: `available`, `authentication_failed` or
`unreachable`. The reason beside it is for the operator's log and never holds a secret or
any of a response's body. Without stored credentials a registry is available when `/v2/`
answers as a registry does: 200, or 401 with a Basic or Bearer challenge (whether a given
image may be pulled anonymously is beyond what `/v2/` tells).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass

import httpx
from anyio import to_thread

from dockyard import __version__
from dockyard.domain.registry_fields import AUTHENTICATION_FAILED, AVAILABLE, UNREACHABLE
from dockyard.verification.addresses import AddressPolicy, IPAddress, parse_address
from dockyard.verification.challenge import Challenge, parse_challenges

# Docker Hub's name and its API's host, as docker maps them.
DOCKER_HUB_HOSTS = frozenset({"docker.io", "index.docker.io"})
DOCKER_HUB_API = "registry-1.docker.io"
USER_AGENT = f"dockyard/{__version__} (registry check)"
MAX_REDIRECTS = 3  # same host only
MAX_ADDRESSES = 4  # of a name's addresses, tried in turn when one refuses the connection
MAX_TOKEN_BYTES = 1024 * 1024
MAX_TOKEN_CHARS = 16 * 1024
REDIRECTS = frozenset({301, 302, 303, 307, 308})
# What a TLS attempt on a plain-HTTP server ends in; for an insecure host, HTTP is next.
_NOT_TLS = (httpx.ConnectError, httpx.RemoteProtocolError, httpx.ReadError)


@dataclass(frozen=True)
class Outcome:
    status: str
    reason: str  # for the log: no secret, no response body


class _UnreachableError(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class _Answer:
    url: httpx.URL  # where it came from, after redirects
    status: int
    challenges: list[Challenge]
    body: bytes  # only when asked for, and at most MAX_TOKEN_BYTES


class RegistryProbe:
    """Checks registries; one instance serves every check of a process."""

    def __init__(
        self, policy: AddressPolicy, *, connect_timeout: float, total_timeout: float
    ) -> None:
        self.policy = policy
        self.connect_timeout = connect_timeout
        self.total_timeout = total_timeout
        self._tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None

    async def _contexts(self) -> tuple[ssl.SSLContext, ssl.SSLContext]:
        """TLS with and without verification, built at the first check, off the event loop:
        loading the CA bundle takes 50-250 ms, which every build_services (each CLI command,
        each test) would pay otherwise. The environment (SSL_CERT_FILE, proxies) is not read:
        settings come from Settings only."""
        if self._tls is None:
            self._tls = await to_thread.run_sync(
                lambda: (
                    httpx.create_ssl_context(trust_env=False),
                    httpx.create_ssl_context(verify=False, trust_env=False),
                )
            )
        return self._tls

    async def check(self, hostname: str, credentials: tuple[str, str] | None) -> Outcome:
        try:
            async with asyncio.timeout(self.total_timeout), self._clients() as clients:
                return await _Login(self.policy, clients, credentials).run(hostname)
        except TimeoutError:
            return Outcome(UNREACHABLE, f"no answer within {self.total_timeout:g} s")
        except _UnreachableError as exc:
            return Outcome(UNREACHABLE, exc.reason)
        except httpx.TimeoutException:
            return Outcome(UNREACHABLE, "no answer in time")
        except httpx.HTTPError as exc:
            # Refused, reset, a TLS failure, a broken answer: the text names no secret (no
            # URL of ours holds one) and no body.
            return Outcome(UNREACHABLE, f"{type(exc).__name__}: {str(exc)[:200]}")

    @contextlib.asynccontextmanager
    async def _clients(self) -> AsyncIterator[tuple[httpx.AsyncClient, httpx.AsyncClient]]:
        verifying, trusting = await self._contexts()

        # A connection per request (no keep-alive): none is shared between tenants' checks,
        # and one made for a name is never reused for another name on the same address.
        def client(tls: ssl.SSLContext) -> httpx.AsyncClient:
            return httpx.AsyncClient(
                verify=tls,
                timeout=httpx.Timeout(self.total_timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_keepalive_connections=0),
                follow_redirects=False,
                trust_env=False,
                headers={"User-Agent": USER_AGENT},
            )

        async with client(verifying) as verified, client(trusting) as unverified:
            yield verified, unverified


def _basic(credentials: tuple[str, str]) -> str:
    username, password = credentials
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


class _Login:
    """The requests of one check."""

    def __init__(
        self,
        policy: AddressPolicy,
        clients: tuple[httpx.AsyncClient, httpx.AsyncClient],
        credentials: tuple[str, str] | None,
    ) -> None:
        self.policy = policy
        self.verified, self.unverified = clients
        self.credentials = credentials
        self._resolved: dict[str, list[IPAddress]] = {}

    async def run(self, hostname: str) -> Outcome:
        try:
            base = httpx.URL(f"https://{hostname}/v2/")
        except httpx.InvalidURL:
            raise _UnreachableError(f"{hostname!r} is not a host") from None
        if base.host in DOCKER_HUB_HOSTS:
            base = base.copy_with(host=DOCKER_HUB_API)
        first = await self._registry(base)
        if first.status == 200:
            return Outcome(AVAILABLE, "/v2/ answers without a login")
        if first.status != 401:
            raise _UnreachableError(f"/v2/ answered {first.status}, not as a registry does")
        challenge = _pick(first.challenges)
        if challenge is None:
            raise _UnreachableError("/v2/ asks for no login Dockyard knows (Basic or Bearer)")
        if self.credentials is None:
            return Outcome(AVAILABLE, f"/v2/ answers and asks for a {challenge.scheme} login")
        if challenge.scheme == "basic":
            authorization = _basic(self.credentials)
        else:
            token = await self._token(challenge)
            if token is None:
                return Outcome(AUTHENTICATION_FAILED, "the token service refused the login")
            authorization = f"Bearer {token}"
        second = await self._get(first.url, authorization=authorization)
        if second.status == 200:
            return Outcome(AVAILABLE, f"logged in ({challenge.scheme})")
        if second.status in (401, 403):
            return Outcome(AUTHENTICATION_FAILED, f"/v2/ refused the {challenge.scheme} login")
        raise _UnreachableError(f"/v2/ answered {second.status} to the login")

    async def _registry(self, base: httpx.URL) -> _Answer:
        """`/v2/` over HTTPS; for a host that may be insecure, over HTTP when that fails."""
        try:
            return await self._get(base)
        except _NOT_TLS:
            addresses = await self._resolve(base.host, base.port or 443)
            if not self.policy.insecure(base.host, base.port, addresses):
                raise
        return await self._get(base.copy_with(scheme="http"))

    async def _token(self, challenge: Challenge) -> str | None:
        """A token from the realm for the stored credentials; None when they are refused."""
        assert self.credentials is not None
        try:
            realm = httpx.URL(challenge.params["realm"])
        except httpx.InvalidURL:
            raise _UnreachableError("the token realm is not a URL") from None
        if realm.scheme not in ("http", "https") or not realm.host:
            raise _UnreachableError("the token realm is not an http(s) URL")
        params = {"client_id": "dockyard"}
        if challenge.params.get("service"):
            params["service"] = challenge.params["service"]
        answer = await self._get(
            realm, authorization=_basic(self.credentials), params=params, read_body=True
        )
        if answer.status in (401, 403):
            return None
        if answer.status != 200:
            raise _UnreachableError(f"the token service answered {answer.status}")
        try:
            document = json.loads(answer.body)
        except ValueError:
            raise _UnreachableError(
                "the token service answered something other than JSON"
            ) from None
        token = (
            (document.get("token") or document.get("access_token"))
            if isinstance(document, dict)
            else None
        )
        if (
            not isinstance(token, str)
            or not 0 < len(token) <= MAX_TOKEN_CHARS
            or not all("\x21" <= ch <= "\x7e" for ch in token)
        ):
            raise _UnreachableError("the token service answered without a usable token")
        return token

    async def _get(
        self,
        url: httpx.URL,
        *,
        authorization: str | None = None,
        params: dict[str, str] | None = None,
        read_body: bool = False,
    ) -> _Answer:
        """GET, following redirects to the same scheme, host and port only: credentials
        never go to a host they were not meant for."""
        for _ in range(MAX_REDIRECTS + 1):
            answer, location = await self._get_once(url, authorization, params, read_body)
            if answer.status not in REDIRECTS or location is None:
                return answer
            target = url.join(location)
            if (target.scheme, target.host, target.port) != (url.scheme, url.host, url.port):
                raise _UnreachableError(f"{url.host} redirects to another host; not followed")
            url, params = target, None
        raise _UnreachableError(f"{url.host} redirects more than {MAX_REDIRECTS} times")

    async def _get_once(
        self,
        url: httpx.URL,
        authorization: str | None,
        params: dict[str, str] | None,
        read_body: bool,
    ) -> tuple[_Answer, str | None]:
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await self._resolve(url.host, port)
        insecure = self.policy.insecure(url.host, url.port, addresses)
        if url.scheme == "http" and not insecure:
            raise _UnreachableError(
                f"{url.host} is asked for over plain HTTP, which only loopback hosts and "
                "those of DOCKYARD_INSECURE_REGISTRIES are"
            )
        client = self.unverified if insecure else self.verified
        headers = {"Host": url.netloc.decode("ascii")}
        if authorization is not None:
            headers["Authorization"] = authorization
        failure: httpx.ConnectError | None = None
        for address in addresses[:MAX_ADDRESSES]:
            # To the address checked, under the name: TLS verifies the certificate for the
            # name (sni_hostname), the server sees the name in Host.
            request = client.build_request(
                "GET",
                url.copy_with(host=str(address)),
                headers=headers,
                params=params,
                extensions={"sni_hostname": url.host},
            )
            try:
                response = await client.send(request, stream=True)
            except httpx.ConnectError as exc:
                failure = exc
                continue
            try:
                body = await _read_capped(response) if read_body else b""
            finally:
                await response.aclose()
            challenges = parse_challenges(response.headers.get_list("www-authenticate"))
            answer = _Answer(url, response.status_code, challenges, body)
            return answer, response.headers.get("location")
        assert failure is not None  # _resolve returns at least one address
        raise failure

    async def _resolve(self, host: str, port: int) -> list[IPAddress]:
        """Every address of the name, each one allowed, or the check is refused."""
        if host in self._resolved:
            return self._resolved[host]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (OSError, UnicodeError):
            raise _UnreachableError(f"{host} does not resolve") from None
        addresses: list[IPAddress] = []
        for *_, sockaddr in infos:
            address = parse_address(str(sockaddr[0]))
            if address is not None and address not in addresses:
                addresses.append(address)
        if not addresses:
            raise _UnreachableError(f"{host} does not resolve")
        for address in addresses:
            refusal = self.policy.refusal(address)
            if refusal is not None:
                raise _UnreachableError(f"{host} resolves to {address}, {refusal}; not connected")
        self._resolved[host] = addresses
        return addresses


def _pick(challenges: list[Challenge]) -> Challenge | None:
    """Bearer with a realm before Basic, as docker prefers it."""
    for wanted in ("bearer", "basic"):
        for challenge in challenges:
            if challenge.scheme == wanted and (wanted == "basic" or challenge.params.get("realm")):
                return challenge
    return None


async def _read_capped(response: httpx.Response) -> bytes:
    chunks: list[bytes] = []
    size = 0
    async for chunk in response.aiter_bytes():
        size += len(chunk)
        if size > MAX_TOKEN_BYTES:
            raise _UnreachableError("the token service's answer is too large")
        chunks.append(chunk)
    return b"".join(chunks)
