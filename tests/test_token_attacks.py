"""Attacks on /v2 tokens beyond tests/test_registry_tokens.py: tampered bytes, spliced and
resigned tokens, algorithm and key-header tricks, escalated scopes, revoked robots later,
other regions, and secrets of one face sent to the other.

Already covered there (not repeated): expired and not-yet-valid tokens, signed tokens with a
wrong aud/iss/typ/rid, missing claims, a token of another key, alg none, HS256 keyed with
the public key's PEM, an access claim edited under the old signature, revocation with
robot_check_seconds 0 and 0.5, a token of one region at another region's host, refresh and
access tokens swapped at /v2/ and /auth/token.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import threading
import time
import types
from collections.abc import Iterator

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm

import dockyard.registry.context as registry_context
from dockyard.domain.projects import create_project
from dockyard.registry.tokens import KEY_FILE
from tests.oci_client import (
    OCIClient,
    assert_error,
    assert_unauthorized,
    basic,
    bearer,
    generate_credentials,
)

V1 = "/v1/container_registries"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def claims_of(token: str) -> dict:
    return jwt.decode(token, options={"verify_signature": False})


def private_key(settings) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key((settings.data_dir / KEY_FILE).read_bytes(), None)
    assert isinstance(key, ec.EllipticCurvePrivateKey)
    return key


def es256_by(key: ec.EllipticCurvePrivateKey, header: dict, claims: dict) -> str:
    """A token whose header says whatever `header` says, signed ES256 by `key`."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = ECAlgorithm(ECAlgorithm.SHA256).sign(signing_input.encode(), key)
    return f"{signing_input}.{b64(signature)}"


def tags_with(client, name: str, token: str):
    return client.get(f"/v2/{name}/tags/list", headers=bearer(token))


def assert_invalid(response, case: object) -> None:
    """401 UNAUTHORIZED, Bearer challenge with error="invalid_token"; `case` names the try."""
    challenge = response.headers.get("www-authenticate", "")
    assert response.status_code == 401 and 'error="invalid_token"' in challenge, (
        case,
        response.status_code,
        challenge,
        response.text,
    )
    assert_unauthorized(response, "invalid_token")


@pytest.fixture
def repo(oci, robot) -> str:
    name = f"{robot.project_id}/app"
    oci.push_image(name, "latest")
    return name


@pytest.fixture
def genuine(oci, repo) -> str:
    return oci.token(f"repository:{repo}:pull")


@pytest.fixture
def foreign(services, client) -> str:
    """A repository of another project, with an image in it."""
    other = create_project(services.db, "Globex")
    robot = generate_credentials(client, other.api_token)
    name = f"{other.id}/secret"
    OCIClient(client, robot["username"], robot["password"]).push_image(name, "latest")
    return name


def escalated(genuine: str, foreign: str) -> dict:
    """The genuine token's claims, granting every action on the foreign repository too."""
    claims = claims_of(genuine)
    claims["access"] += [
        {"type": "repository", "name": foreign, "actions": ["*"]},
        {"type": "registry", "name": "catalog", "actions": ["*"]},
    ]
    return claims


# -- tampered bytes ------------------------------------------------------------------------


def test_one_flipped_bit_anywhere_is_refused(client, genuine, repo):
    """In the header, the payload and the signature; first, middle and last byte."""
    assert tags_with(client, repo, genuine).status_code == 200
    segments = genuine.split(".")
    for part, part_name in enumerate(("header", "payload", "signature")):
        raw = unb64(segments[part])
        for position in {0, len(raw) // 2, len(raw) - 1}:
            for bit in (0x01, 0x80):
                flipped = bytearray(raw)
                flipped[position] ^= bit
                tampered = segments.copy()
                tampered[part] = b64(bytes(flipped))
                response = tags_with(client, repo, ".".join(tampered))
                assert_invalid(response, (part_name, position, bit))


def test_a_signature_spliced_from_another_genuine_token_is_refused(client, oci, genuine, repo):
    catalog = oci.token("registry:catalog:*")
    header, payload, _ = catalog.split(".")
    spliced = f"{header}.{payload}.{genuine.split('.')[2]}"
    assert_unauthorized(client.get("/v2/_catalog", headers=bearer(spliced)), "invalid_token")


def test_a_malformed_signature_is_refused(client, genuine, repo):
    header, payload, sig = genuine.split(".")
    raw = unb64(sig)
    signatures = {
        "empty": b"",
        "half": raw[:32],
        "one byte more": raw + b"\x00",
        "zeros": b"\x00" * 64,
        # The same (r, s) in DER, as OpenSSL writes it, instead of JOSE's r || s.
        "der": b"\x30\x44\x02\x20" + raw[:32] + b"\x02\x20" + raw[32:],
    }
    for case, signature in signatures.items():
        assert_invalid(tags_with(client, repo, f"{header}.{payload}.{b64(signature)}"), case)


def test_garbage_shaped_like_a_token_is_invalid_token_not_an_error(client, genuine, repo):
    header, payload, signature = genuine.split(".")
    tokens = {
        "four parts": f"{genuine}.{signature}",
        "header not an object": f"{b64(b'[]')}.{payload}.{signature}",
        "payload not json": f"{header}.{b64(b'not json')}.{signature}",
        "payload a list": f"{header}.{b64(b'[1]')}.{signature}",
        "not base64": f"{header}.{payload}!.{signature}",
        "60 KiB (more is a 431, see test_limits)": "x" * 60 * 1024,
    }
    for case, token in tokens.items():
        assert_invalid(tags_with(client, repo, token), case)


# -- algorithms and keys named in the header ---------------------------------------------


def test_the_real_key_under_another_alg_header_is_refused(client, settings, genuine, repo):
    """Signed by the service's own key, only the header's alg changed: the verifier takes
    ES256 and nothing else, whatever the header claims."""
    key = private_key(settings)
    control = es256_by(key, {"alg": "ES256", "typ": "JWT"}, claims_of(genuine))
    assert tags_with(client, repo, control).status_code == 200
    for alg in ("RS256", "ES384", "ES512", "PS256", "EdDSA", "HS256", "es256", "none", None):
        header = {"typ": "JWT"} if alg is None else {"alg": alg, "typ": "JWT"}
        token = es256_by(key, header, claims_of(genuine))
        assert_invalid(tags_with(client, repo, token), alg)


def _public_forms(settings) -> dict[str, bytes]:
    public = private_key(settings).public_key()
    jwk = ECAlgorithm.to_jwk(public).encode()
    return {
        "pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "point": public.public_bytes(
            serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
        ),
        "jwk": jwk,
    }


def test_hmac_keyed_with_any_form_of_the_public_key_is_refused(client, settings, genuine, foreign):
    """Algorithm confusion with every spelling of the public key an attacker could try."""
    claims = b64(json.dumps(escalated(genuine, foreign)).encode())
    digests = {"HS256": hashlib.sha256, "HS384": hashlib.sha384, "HS512": hashlib.sha512}
    for alg, digest in digests.items():
        for form, secret in _public_forms(settings).items():
            signing_input = f"{b64(json.dumps({'alg': alg, 'typ': 'JWT'}).encode())}.{claims}"
            signature = hmac.new(secret, signing_input.encode(), digest).digest()
            token = f"{signing_input}.{b64(signature)}"
            assert_invalid(tags_with(client, foreign, token), (alg, form))


def test_unsigned_escalated_tokens_are_refused(client, genuine, foreign):
    payload = b64(json.dumps(escalated(genuine, foreign)).encode())
    for alg in ("none", "None", "NONE", "nOnE"):
        header = b64(json.dumps({"alg": alg, "typ": "JWT"}).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}", f"{header}.{payload}.AAAA"):
            assert_invalid(tags_with(client, foreign, token), (alg, token[-5:]))
            assert_invalid(client.get("/v2/_catalog", headers=bearer(token)), (alg, "catalog"))


@pytest.fixture
def listener() -> Iterator[tuple[str, list]]:
    """A URL nobody should ever fetch, and the connections made to it."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    server.settimeout(0.1)
    connections: list = []
    stop = threading.Event()

    def accept() -> None:
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            connections.append(conn)
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.getsockname()[1]}/keys.json", connections
    stop.set()
    thread.join(timeout=2)
    server.close()


def _attacker_keys() -> list[tuple[str, object]]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return [
        ("ES256", ec.generate_private_key(ec.SECP256R1())),
        ("ES384", ec.generate_private_key(ec.SECP384R1())),
        ("RS256", rsa_key),
        ("PS256", rsa_key),
        ("EdDSA", ed25519.Ed25519PrivateKey.generate()),
    ]


def test_keys_named_or_embedded_in_the_header_are_never_used(
    client, settings, genuine, foreign, listener
):
    """An attacker signs escalated claims with a key of their own and points the header at
    it (jwk, jku, x5u, x5c, kid): refused, and nothing is ever fetched from those URLs."""
    url, connections = listener
    claims = escalated(genuine, foreign)
    for alg, key in _attacker_keys():
        public = key.public_key()
        jwk = json.loads(jwt.algorithms.get_default_algorithms()[alg].to_jwk(public))
        cert_b64 = base64.b64encode(b"not a certificate, but the header says x5c").decode()
        headers = [
            {"jwk": jwk},
            {"jku": url},
            {"x5u": url},
            {"x5c": [cert_b64]},
            {"kid": "../../../../dev/null"},
            {"kid": "' OR '1'='1"},
            {"kid": url, "jku": url, "x5u": url, "jwk": jwk},
        ]
        for header in headers:
            token = jwt.encode(claims, key, algorithm=alg, headers=header)
            assert_invalid(tags_with(client, foreign, token), (alg, sorted(header)))
    # A jku on a token the service signed itself: the header selects no key, it is ignored.
    own = jwt.encode(claims_of(genuine), private_key(settings), "ES256", headers={"jku": url})
    assert tags_with(client, claims_of(genuine)["access"][0]["name"], own).status_code == 200
    time.sleep(0.2)  # a fetch, had one started, would have connected by now
    assert connections == []


def test_a_critical_header_extension_is_refused(client, settings, genuine, repo):
    """RFC 7515: a `crit` extension the verifier does not know makes the token invalid."""
    token = jwt.encode(
        claims_of(genuine),
        private_key(settings),
        "ES256",
        headers={"crit": ["dockyard-unknown"], "dockyard-unknown": True},
    )
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")


# -- scope escalation at the token endpoint ------------------------------------------------


def test_no_spelling_of_a_scope_grants_another_projects_repository(client, oci, robot, foreign):
    other_project = foreign.partition("/")[0]
    own = f"{robot.project_id}/app"
    scopes = [
        f"repository:{foreign}:pull",
        f"repository:{foreign}:*",
        f"repository(plugin):{foreign}:pull",
        f"repository:{foreign}:pull:extra",
        f"repository:{foreign}",
        f"repository:{foreign.upper()}:pull",
        f"repository:{foreign}/:pull",
        f"repository:/{foreign}:pull",
        f"repository:{own}/../../{foreign}:pull",
        f"repository:{robot.project_id}/../{foreign}:pull",
        f"repository:{foreign}%00:pull",
        f"repository:{foreign}\x00:pull",
        f"repository:{foreign} repository:{own}:pull",
        f"REPOSITORY:{foreign}:pull",
        f"registry:{foreign}:*",
        f"registry:catalog:*,{foreign}",
    ]
    for scope in scopes:
        response = oci.token_response([scope])
        assert response.status_code == 200, (scope, response.text)
        granted = json.dumps(claims_of(response.json()["token"])["access"])
        assert other_project not in granted, (scope, granted)
    by_post = client.post(
        "/auth/token",
        data={
            "grant_type": "password",
            "username": robot.username,
            "password": robot.password,
            "service": robot.hostname,
            "scope": " ".join(scopes),
        },
    )
    assert by_post.status_code == 200, by_post.text
    assert other_project not in json.dumps(claims_of(by_post.json()["token"])["access"])


def test_a_token_granted_its_own_project_cannot_reach_another(client, oci, robot, foreign):
    token = oci.token(f"repository:{foreign}:pull,push,delete", "registry:catalog:*")
    assert claims_of(token)["access"] == [{"type": "registry", "name": "catalog", "actions": ["*"]}]
    assert_unauthorized(tags_with(client, foreign, token), "insufficient_scope")
    # The catalog grant names no project: it lists the robot's own, never the other's.
    assert foreign not in client.get("/v2/_catalog", headers=bearer(token)).text


# -- revoked robots, later -------------------------------------------------------------------


@pytest.fixture
def clock(monkeypatch) -> types.SimpleNamespace:
    """Time travel for the registry's memory of which robots exist."""
    real = time.monotonic
    now = types.SimpleNamespace(offset=0.0)
    fake = types.SimpleNamespace(monotonic=lambda: real() + now.offset, time=time.time)
    monkeypatch.setattr(registry_context, "time", fake)
    return now


def revoke(client, auth, robot) -> None:
    response = client.delete(f"{V1}/{robot.registry_id}/credentials", headers=auth)
    assert response.status_code == 200, response.text


def test_a_token_of_revoked_credentials_stops_once_robot_check_seconds_pass(
    client, settings, auth, oci, robot, repo, clock
):
    """With the default robot_check_seconds (30), a token issued before the revocation is
    refused as soon as the remembered standing is older than that, not at its own expiry."""
    assert settings.robot_check_seconds == 30
    token = oci.token(f"repository:{repo}:pull")
    assert tags_with(client, repo, token).status_code == 200
    revoke(client, auth, robot)
    clock.offset = settings.robot_check_seconds + 0.5
    assert claims_of(token)["exp"] > time.time() + 60  # long before the token expires
    assert_unauthorized(tags_with(client, repo, token), "invalid_token")
    assert_unauthorized(client.get("/v2/", headers=bearer(token)), "invalid_token")
    upload = client.post(f"/v2/{repo}/blobs/uploads/", headers=bearer(token))
    assert_unauthorized(upload, "invalid_token")


def test_a_refresh_token_of_revoked_credentials_fails_after_new_ones_are_made(
    client, auth, project, oci, robot
):
    refresh = oci.token_response(offline_token="true").json()["refresh_token"]
    revoke(client, auth, robot)
    fresh = generate_credentials(client, project.api_token, robot.registry_id)
    assert fresh["password"] != robot.password
    refreshed = client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": robot.hostname},
    )
    assert_error(refreshed, 401, "UNAUTHORIZED")
    assert "revoked" in refreshed.json()["errors"][0]["message"]


# -- other regions -----------------------------------------------------------------------------

REGIONS = [{"slug": "fra", "name": "Frankfurt, DE"}, {"slug": "ams", "name": "Amsterdam, NL"}]
FRA, AMS = "registry.fra.nodion.net", "registry.ams.nodion.net"


@pytest.fixture
def fra(make_client, project):
    """A client of a two-region deployment and the credentials of the fra registry."""
    client = make_client(regions=REGIONS, registry_domain="nodion.net")
    listed = client.get(V1, headers=bearer(project.api_token)).json()["container_registries"]
    fra_id = next(r["id"] for r in listed if r["hostname"] == FRA)
    return client, generate_credentials(client, project.api_token, fra_id)


def test_a_robot_cannot_get_a_token_for_another_regions_service(fra):
    client, robot = fra
    for host in (FRA, AMS):
        response = client.get(
            f"http://{host}/auth/token",
            params={"service": AMS},
            headers=basic(robot["username"], robot["password"]),
        )
        assert_error(response, 401, "UNAUTHORIZED")
    own = client.get(
        f"http://{AMS}/auth/token",
        params={"service": FRA},
        headers=basic(robot["username"], robot["password"]),
    )
    assert own.status_code == 200, own.text
    assert claims_of(own.json()["token"])["aud"] == FRA
    assert_unauthorized(
        client.get(f"http://{AMS}/v2/", headers=bearer(own.json()["token"])), "invalid_token"
    )


def test_a_refresh_token_of_one_region_refreshes_nothing_at_another(fra):
    client, robot = fra
    issued = client.get(
        f"http://{FRA}/auth/token",
        params={"service": FRA, "offline_token": "true"},
        headers=basic(robot["username"], robot["password"]),
    )
    refresh = issued.json()["refresh_token"]
    at_ams = client.post(
        f"http://{AMS}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": AMS},
    )
    assert_error(at_ams, 401, "UNAUTHORIZED")
    at_fra = client.post(
        f"http://{FRA}/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh, "service": FRA},
    )
    assert at_fra.status_code == 200, at_fra.text  # the control


# -- one face's secrets at the other face ------------------------------------------------------


def test_refresh_tokens_open_no_endpoint(client, oci, repo):
    refresh = oci.token_response([f"repository:{repo}:pull"], offline_token="true").json()[
        "refresh_token"
    ]
    for path in ("/v2/", f"/v2/{repo}/tags/list", f"/v2/{repo}/manifests/latest", "/v2/_catalog"):
        assert_unauthorized(client.get(path, headers=bearer(refresh)), "invalid_token")


def test_an_api_token_is_no_registry_credential(client, project, robot):
    api_token = project.api_token
    assert_unauthorized(client.get("/v2/", headers=bearer(api_token)), "invalid_token")
    for username in (robot.username, "", str(project.id)):
        login = client.get(
            "/auth/token",
            params={"service": robot.hostname},
            headers=basic(username, api_token),
        )
        assert_error(login, 401, "UNAUTHORIZED")
    as_refresh = client.post(
        "/auth/token",
        data={"grant_type": "refresh_token", "refresh_token": api_token, "service": robot.hostname},
    )
    assert_error(as_refresh, 401, "UNAUTHORIZED")


def _api_refusal(response) -> str:
    assert response.status_code == 401, response.text
    assert response.headers["www-authenticate"].startswith("Bearer")
    (sentence,) = response.json()["errors"]
    return sentence


def test_registry_secrets_are_no_api_tokens(client, oci, robot, repo):
    access = oci.token(f"repository:{repo}:pull")
    refresh = oci.token_response(offline_token="true").json()["refresh_token"]
    for secret in (access, refresh, robot.password, f"{robot.username}:{robot.password}"):
        sentence = _api_refusal(client.get(V1, headers=bearer(secret)))
        assert sentence == "API token is invalid or has been revoked"
        assert secret not in sentence
    sentence = _api_refusal(client.get(V1, headers=basic(robot.username, robot.password)))
    assert "Bearer" in sentence


def test_tokens_in_the_query_string_are_not_taken(client, project, oci, repo):
    """Credentials go in the Authorization header; a query parameter is no way in (it would
    land in every access log and proxy log on the way)."""
    token = oci.token(f"repository:{repo}:pull")
    for parameter in ("access_token", "token", "bearer"):
        response = client.get(f"/v2/{repo}/tags/list", params={parameter: token})
        assert_unauthorized(response)
        response = client.get(V1, params={parameter: project.api_token})
        assert _api_refusal(response).startswith("Authorization header is missing")
