"""No secret leaves: not in the log of a real `dockyard serve` at debug level with its
access log, not in any error body or header, whatever the client does right or wrong."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest

from tests.oci_client import OCIClient, basic, bearer, sha256
from tests.support import Server, start_server

V1 = "/v1/container_registries"
# The parameters through which clients are known to send a secret in a URL.
SECRET_PARAMETERS = ("access_token", "token", "refresh_token", "password")


def _signature(token: str) -> str:
    """A JWT's signature: a log line cut short would still show it whole."""
    return token.rsplit(".", 1)[-1]


class Recorder:
    """Every response the test received, and every secret it has seen or sent."""

    def __init__(self) -> None:
        self.responses: list[httpx.Response] = []
        self.secrets: dict[str, str] = {}

    def secret(self, what: str, value: str) -> str:
        assert value and len(value) >= 8, (what, value)
        self.secrets[what] = value
        if value.count(".") == 2:
            self.secrets[f"{what} (signature)"] = _signature(value)
        return value

    def hook(self, response: httpx.Response) -> None:
        response.read()
        self.responses.append(response)

    def client(self, server: Server, **kwargs) -> httpx.Client:
        return httpx.Client(
            base_url=server.url, event_hooks={"response": [self.hook]}, timeout=30, **kwargs
        )

    def found_in(self, text: str) -> list[str]:
        return sorted(what for what, value in self.secrets.items() if value in text)


@pytest.fixture
def debug_server(tmp_path: Path, database_url: str):
    srv = start_server(tmp_path, database_url, LOG_LEVEL="debug")
    yield srv
    srv.stop()


def _project(server: Server, recorder: Recorder) -> tuple[str, str]:
    created = json.loads(server.cli("projects", "create", "Acme", "--json"))
    return created["id"], recorder.secret("api token", created["api_token"])


def test_a_full_flow_at_debug_level_leaks_no_secret(debug_server: Server) -> None:
    server, rec = debug_server, Recorder()
    project_id, api_token = _project(server, rec)
    host = f"127.0.0.1:{server.port}"

    with rec.client(server, headers=bearer(api_token)) as api:
        managed = api.get(V1).json()["container_registries"][0]
        # An external registry with a password, changed later by a form body.
        hub = api.post(
            V1,
            json={
                "name": "Hub",
                "registry_type": "docker_hub",
                "username": "me",
                "password": rec.secret("external password", "hub-password-5c0a7e1d"),
            },
        ).json()["container_registry"]
        patched = api.patch(
            f"{V1}/{hub['id']}",
            data={"username": "me", "password": rec.secret("new external", "hub-new-9b2f4c61")},
        )
        assert patched.status_code == 200, patched.text
        assert api.get(f"{V1}/{hub['id']}").json()["container_registry"]["has_credentials"]
        # A body the rules refuse, holding a password: the refusal must not repeat it.
        refused = api.post(
            V1,
            json={
                "name": "",
                "registry_type": "custom",
                "hostname": "not a host name",
                "password": rec.secret("refused password", "refused-password-71d3a0"),
            },
        )
        assert refused.status_code == 400, refused.text
        robot = api.post(f"{V1}/{managed['id']}/credentials").json()["container_registry"]
        rec.secret("robot password", robot["password"])
        assert api.post(f"{V1}/{managed['id']}/credentials").status_code == 400

    with rec.client(server) as http:
        # Wrong API tokens.
        for wrong in ("dky_wrong-token-0000000000000000", api_token + "x"):
            rec.secret(f"wrong api token {wrong[-4:]}", wrong)
            assert http.get(V1, headers=bearer(wrong)).status_code == 401
        assert http.get(V1, headers=basic("user", api_token)).status_code == 401

        # A user API key: used right, beyond its scope, for another project, and revoked.
        server.cli("users", "create", "ops@example.com", "--default-project", project_id)
        made = json.loads(server.cli("users", "keys", "create", "ops@example.com", "--json"))
        user_key = rec.secret("user api key", made["api_key"])
        assert http.get(V1, headers=bearer(user_key)).status_code == 200
        assert http.post(V1, json={"name": "x"}, headers=bearer(user_key)).status_code == 403
        elsewhere = {**bearer(user_key), "X-Nodion-Project": "6a0e1b8e-0000-4000-8000-000000000000"}
        assert http.get(V1, headers=elsewhere).status_code == 404
        server.cli("users", "keys", "revoke", user_key)
        assert http.get(V1, headers=bearer(user_key)).status_code == 401
        wrong_key = rec.secret("wrong user key", "dkyu_wrong-key-000000000000000000")
        assert http.get(V1, headers=bearer(wrong_key)).status_code == 401

        # docker login: Basic, with a refresh token (offline_token), then refresh grants.
        name = f"{project_id}/app"
        scope = f"repository:{name}:pull,push"
        logged_in = http.get(
            "/auth/token",
            params={"service": robot["hostname"], "scope": scope, "offline_token": "true"},
            headers=basic(robot["username"], robot["password"]),
        )
        assert logged_in.status_code == 200, logged_in.text
        rec.secret("access token", logged_in.json()["token"])
        refresh = rec.secret("refresh token", logged_in.json()["refresh_token"])
        form = {"service": robot["hostname"], "scope": scope, "client_id": "docker"}
        by_password = http.post(
            "/auth/token",
            data={
                **form,
                "grant_type": "password",
                "username": robot["username"],
                "password": robot["password"],
                "access_type": "offline",
            },
        )
        assert by_password.status_code == 200, by_password.text
        rec.secret("access token 2", by_password.json()["access_token"])
        rec.secret("refresh token 2", by_password.json()["refresh_token"])
        refreshed = http.post(
            "/auth/token", data={**form, "grant_type": "refresh_token", "refresh_token": refresh}
        )
        assert refreshed.status_code == 200, refreshed.text
        rec.secret("access token 3", refreshed.json()["access_token"])
        rec.secret("refresh token 3", refreshed.json()["refresh_token"])

        # Failed logins: a wrong password, by Basic and by form; the password typed into the
        # username field; a tampered refresh token; an access token as a refresh token.
        wrong_password = rec.secret("wrong password", robot["password"][:-3] + "zzz")
        assert (
            http.get(
                "/auth/token",
                params={"service": robot["hostname"], "scope": scope},
                headers=basic(robot["username"], wrong_password),
            ).status_code
            == 401
        )
        assert (
            http.get(
                "/auth/token",
                params={"service": robot["hostname"]},
                headers=basic(robot["password"], robot["password"]),
            ).status_code
            == 401
        )
        bad_form = {**form, "grant_type": "password", "username": robot["username"]}
        assert (
            http.post("/auth/token", data={**bad_form, "password": wrong_password}).status_code
            == 401
        )
        tampered = rec.secret("tampered refresh", refresh[:-6] + "AAAAAA")
        for bad in (tampered, logged_in.json()["token"]):
            failed = http.post(
                "/auth/token", data={**form, "grant_type": "refresh_token", "refresh_token": bad}
            )
            assert failed.status_code == 401, failed.text
        forged = rec.secret("forged bearer", logged_in.json()["token"][:-6] + "AAAAAA")
        assert http.get(f"/v2/{name}/tags/list", headers=bearer(forged)).status_code == 401

        # Push and pull a small image, as docker does.
        oci = OCIClient(http, robot["username"], robot["password"], host=host)
        oci.push_image(name, "latest", layers=[b"layer " * 100])
        pulled = oci.get_manifest(name, "latest")
        assert pulled.status_code == 200
        layer = json.loads(pulled.content)["layers"][0]["digest"]
        assert oci.get_blob(name, layer).content == b"layer " * 100
        assert oci.head_blob(name, sha256(b"absent")).status_code == 404
        for token in set(oci.tokens.values()):
            rec.secret(f"pull/push token {token[-6:]}", token)

        # Revoke, then try the old credentials and tokens.
        revoked = http.delete(f"{V1}/{managed['id']}/credentials", headers=bearer(api_token))
        assert revoked.status_code == 200, revoked.text
        after = http.get(
            "/auth/token",
            params={"service": robot["hostname"]},
            headers=basic(robot["username"], robot["password"]),
        )
        assert after.status_code == 401
        http.get(f"/v2/{name}/tags/list", headers=bearer(logged_in.json()["token"]))

        # The audit log records the failed logins, with no password (not even the one typed
        # into the username field) and no token.
        audit = http.get("/v1/audit_events", headers=bearer(api_token), params={"per_page": 100})
        assert audit.status_code == 200, audit.text
        actions = [event["action"] for event in audit.json()["audit_events"]]
        assert actions.count("login.failed") >= 2, actions
        assert rec.found_in(audit.text) == []

    server.stop()  # everything written and flushed
    log = server.log()
    # The control: the log is the debug log with the access log in it, so a leak would show.
    assert f'"GET /v2/{name}/manifests/latest' in log, log[-3000:]
    assert "/auth/token?" in log
    assert rec.found_in(log) == [], [line for line in log.splitlines() if rec.found_in(line)]

    assert len(rec.responses) >= 30
    for response in rec.responses:
        shown = "\n".join(f"{k}: {v}" for k, v in response.headers.items())
        if response.status_code >= 400:
            shown += "\n" + response.text
        where = f"{response.request.method} {response.request.url.path} {response.status_code}"
        assert rec.found_in(shown) == [], where


def test_a_token_sent_in_the_query_string_is_not_written_to_the_access_log(
    tmp_path: Path,
) -> None:
    """Clients that put a token in the URL (`?access_token=`) must not find it in the log.
    One backend: the access log is the HTTP server's, whatever the database."""
    (tmp_path / "data").mkdir()
    server = start_server(tmp_path, f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}")
    try:
        rec = Recorder()
        _, api_token = _project(server, rec)
        with rec.client(server) as http:
            managed = http.get(V1, headers=bearer(api_token)).json()["container_registries"][0]
            robot = http.post(
                f"{V1}/{managed['id']}/credentials", headers=bearer(api_token)
            ).json()["container_registry"]
            rec.secret("robot password", robot["password"])
            login = http.get(
                "/auth/token",
                params={"service": robot["hostname"]},
                headers=basic(robot["username"], robot["password"]),
            )
            access = rec.secret("access token", login.json()["token"])
            for parameter in SECRET_PARAMETERS:
                http.get("/v2/", params={parameter: access})
                http.get(V1, params={parameter: api_token})
                http.get(
                    "/auth/token",
                    params={"service": robot["hostname"], parameter: robot["password"]},
                )
        refusals = [r for r in rec.responses if r.status_code >= 400]
        assert len(refusals) >= 3 * len(SECRET_PARAMETERS)  # no token is taken from a URL
        for response in refusals:
            assert rec.found_in(response.text) == [], response.request.url.path
    finally:
        server.stop()
    log = server.log()
    assert "GET /v2/?" in log  # the control: the access log is on
    assert rec.found_in(log) == [], [line for line in log.splitlines() if rec.found_in(line)]
