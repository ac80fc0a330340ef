"""The web console's security, through real HTTP against create_app (the TestClient): the
session cookie, CSRF, escaping, isolation between projects, the throttle and the audit log.

The flows themselves are clicked through in a real browser in test_console_browser.py.
"""

from __future__ import annotations

import html
import re
import time
import uuid
from datetime import timedelta

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from dockyard.app import Services, build_services, create_app
from dockyard.console.session import COOKIE, SIGN_IN_COOKIE, SessionData, SessionSealer
from dockyard.db.models import AuditEvent, ContainerRegistry
from dockyard.domain.projects import NewProject, create_project, create_token, revoke_token
from dockyard.domain.user_keys import create_key
from dockyard.domain.users import create_user
from tests.external_registries import htpasswd_line, start_distribution
from tests.oci_client import OCIClient
from tests.rotation_support import logs_in
from tests.support import free_port

EVIL_NAME = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
ATTACKER = "203.0.113.66"
DAY = 24 * 3600


def csrf_of(page: httpx.Response) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert found, page.text
    return found.group(1)


def errors_of(page: httpx.Response) -> list[str]:
    block = re.search(r'<div class="errors" role="alert">(.*?)</div>', page.text, re.S)
    if block is None:
        return []
    return [html.unescape(item) for item in re.findall(r"<li>(.*?)</li>", block.group(1), re.S)]


def sign_in(client: TestClient, token: str) -> httpx.Response:
    """The sign-in form as a browser sends it: fetched first (it sets the nonce cookie)."""
    form = client.get("/sign-in")
    nonce = re.search(r'name="nonce" value="([^"]+)"', form.text)
    assert nonce, form.text
    return client.post(
        "/sign-in", data={"nonce": nonce.group(1), "token": token}, follow_redirects=False
    )


def signed_in(client: TestClient, token: str) -> str:
    """Signs in and returns the session's CSRF token."""
    answer = sign_in(client, token)
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/"
    return csrf_of(client.get("/"))


def managed_id(services: Services, project: NewProject) -> str:
    return str(services.registries.list_all(project.id)[0].id)


def external_count(services: Services, project_id: uuid.UUID) -> int:
    with services.db.read() as session:
        rows = session.scalars(
            select(ContainerRegistry).where(
                ContainerRegistry.project_id == project_id,
                ContainerRegistry.registry_type != "nodion",
            )
        )
        return len(list(rows))


def actions_of(services: Services, project_id: uuid.UUID) -> list[str]:
    """The project's audit log, newest first, as the domain wrote it."""
    with services.db.read() as session:
        rows = session.scalars(
            select(AuditEvent.action)
            .where(AuditEvent.project_id == project_id)
            .order_by(AuditEvent.created_at.desc())
        )
        return list(rows)


def set_cookie_headers(response: httpx.Response, name: str) -> list[str]:
    return [h for h in response.headers.get_list("set-cookie") if h.startswith(f"{name}=")]


# -- signing in -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/",
        "/registries/new",
        "/registries/0b7f6f0e-6a5e-4a43-9f3e-1c2d3e4f5a6b",
        "/registries/x/edit",
        "/registries/x/credentials/rotate",
    ],
)
def test_pages_send_a_stranger_to_the_sign_in_page(client, path):
    answer = client.get(path, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in"
    page = client.get("/sign-in")
    assert page.status_code == 200
    assert 'name="token" type="password"' in page.text


def test_a_post_without_a_session_changes_nothing(client, services, project):
    answer = client.post(
        "/registries/new",
        data={"name": "Hub", "registry_type": "docker_hub"},
        follow_redirects=False,
    )
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in"
    assert external_count(services, project.id) == 0


def test_a_good_token_signs_in_with_a_sealed_strict_httponly_cookie(client, project):
    answer = sign_in(client, project.api_token)
    assert answer.status_code == 303
    [cookie] = set_cookie_headers(answer, COOKIE)
    flags = [part.strip().lower() for part in cookie.split(";")]
    assert "httponly" in flags
    assert "samesite=strict" in flags
    assert "path=/" in flags
    assert "secure" not in flags  # plain http: a Secure cookie would never come back
    assert any(flag.startswith("max-age=") for flag in flags)
    # The token is in the cookie only sealed: neither it nor its random part shows.
    assert project.api_token not in cookie
    assert project.api_token.removeprefix("dky_")[:16] not in cookie
    # The pre-sign-in cookie is dropped.
    [dropped] = set_cookie_headers(answer, SIGN_IN_COOKIE)
    assert "max-age=0" in dropped.lower()

    home = client.get("/")
    assert home.status_code == 200
    assert "Acme" in home.text
    assert "Nodion Registry (Local)" in home.text
    assert project.api_token not in home.text


def test_the_cookie_is_secure_over_https(make_client, services):
    project = create_project(services.db, "Acme")
    client = make_client()
    client.base_url = httpx.URL("https://testserver")
    answer = sign_in(client, project.api_token)
    [cookie] = set_cookie_headers(answer, COOKIE)
    assert "secure" in [part.strip().lower() for part in cookie.split(";")]


@pytest.mark.parametrize(("peer", "secure"), [("10.0.0.5", True), (ATTACKER, False)])
def test_a_trusted_proxy_says_whether_the_browser_used_https(make_client, peer, secure):
    app = make_client(trusted_proxies=["10.0.0.0/8"]).app
    client = TestClient(app, client=(peer, 40000))
    form = client.get("/sign-in", headers={"X-Forwarded-Proto": "https"})
    [cookie] = set_cookie_headers(form, SIGN_IN_COOKIE)
    assert ("secure" in [p.strip().lower() for p in cookie.split(";")]) is secure


def test_a_bad_token_shows_the_form_again_with_a_sentence_and_is_never_echoed(client, project):
    guess = "dky_" + "x" * 43
    answer = sign_in(client, guess)
    assert answer.status_code == 401
    assert errors_of(answer) == [
        "That API token is not valid or has been revoked; check it and try again"
    ]
    assert guess not in answer.text
    assert set_cookie_headers(answer, COOKIE) == []
    assert client.get("/", follow_redirects=False).status_code == 303

    blank = sign_in(client, "   ")
    assert blank.status_code == 400
    assert errors_of(blank) == ["Enter a project API token to sign in"]


def test_a_user_api_key_does_not_sign_in_to_the_console(client, services, project):
    user = create_user(services.db, "dev@example.com", default_project=str(project.id))
    _, key = create_key(services.db, str(user.id), scopes=["read", "write"])
    # The control: the key works on /v1, for the same project.
    auth = {"Authorization": f"Bearer {key}"}
    assert client.get("/v1/container_registries", headers=auth).status_code == 200
    answer = sign_in(client, key)
    assert answer.status_code == 401
    assert errors_of(answer) == [
        "That API token is not valid or has been revoked; check it and try again"
    ]
    assert set_cookie_headers(answer, COOKIE) == []


def test_bad_tokens_count_toward_the_same_throttle_as_v1(make_settings):
    settings = make_settings(login_failures_per_source=3)
    now = [1000.0]
    services = build_services(settings, clock=lambda: now[0])
    try:
        app = create_app(settings, services)
        project = create_project(services.db, "Acme")
        attacker = TestClient(app, client=(ATTACKER, 40000))
        for n in range(3):
            assert sign_in(attacker, f"dky_guess{n}").status_code == 401
        # Blocked: even the right token is not looked at, in the console and on /v1.
        refused = sign_in(attacker, project.api_token)
        assert refused.status_code == 429
        assert 1 <= int(refused.headers["retry-after"]) <= 60
        assert "try again in" in errors_of(refused)[0]
        auth = {"Authorization": f"Bearer {project.api_token}"}
        assert attacker.get("/v1/container_registries", headers=auth).status_code == 429
        # Someone else is not held back, and the block lifts by itself.
        assert sign_in(TestClient(app), project.api_token).status_code == 303
        now[0] += 61
        assert sign_in(attacker, project.api_token).status_code == 303
        with services.db.read() as session:
            actions = list(session.scalars(select(AuditEvent.action)))
        assert actions.count("login.failed") == 3
        assert actions.count("login.blocked") == 1
    finally:
        services.close()


def test_a_revoked_token_ends_its_console_sessions_at_once(client, services, project):
    info, token = create_token(services.db, str(project.id))
    signed_in(client, token)
    assert client.get("/").status_code == 200
    revoke_token(services.db, str(info.id))
    answer = client.get("/", follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?ended=1"
    [cleared] = set_cookie_headers(answer, COOKIE)
    assert "max-age=0" in cleared.lower()
    assert "Your session has ended" in client.get("/sign-in?ended=1").text


def test_an_expired_forged_or_altered_cookie_is_no_session(client, services, project):
    sealer = SessionSealer(services.registries.cipher, 3600)
    expired = sealer.seal(SessionData(project.api_token, "c" * 43, time.time() - 1))
    fresh = sealer.seal(SessionData(project.api_token, "c" * 43, time.time() + 3600))
    altered = fresh[:-6] + ("AAAA" if fresh[-6:-2] != "AAAA" else "BBBB") + fresh[-2:]
    other_key = SessionSealer(type(services.registries.cipher)(b"k" * 32), 3600).seal(
        SessionData(project.api_token, "c" * 43, time.time() + 3600)
    )
    for value in (expired, altered, other_key, "v1:", "x" * 5000, project.api_token):
        client.cookies.set(COOKIE, value)
        answer = client.get("/", follow_redirects=False)
        assert answer.status_code == 303, value
        assert answer.headers["location"] == "/sign-in?ended=1"
    client.cookies.set(COOKIE, fresh)  # the control: the same thing unaltered works
    assert client.get("/", follow_redirects=False).status_code == 200


def test_sign_out_deletes_the_cookie(client, project):
    csrf = signed_in(client, project.api_token)
    refused = client.post("/sign-out", data={}, follow_redirects=False)
    assert refused.status_code == 403  # another site cannot sign you out either
    assert client.get("/", follow_redirects=False).status_code == 200
    answer = client.post("/sign-out", data={"csrf": csrf}, follow_redirects=False)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/sign-in?signed_out=1"
    assert client.get("/", follow_redirects=False).status_code == 303


# -- CSRF ---------------------------------------------------------------------------------------


def post_forms(registry: str, managed: str) -> list[tuple[str, dict[str, str]]]:
    return [
        ("/registries/new", {"name": "Hub", "registry_type": "docker_hub"}),
        (f"/registries/{registry}/edit", {"name": "Renamed", "hostname": "docker.io"}),
        (f"/registries/{registry}/delete", {}),
        (f"/registries/{managed}/credentials", {}),
        (f"/registries/{managed}/credentials/rotate", {"grace_period": "0"}),
        (f"/registries/{registry}/verify", {}),
    ]


def test_every_form_post_without_the_sessions_csrf_token_is_refused(client, services, project):
    csrf = signed_in(client, project.api_token)
    registry = services.registries.create(project.id, {"name": "Hub", "registry_type": "ghcr"})
    managed = managed_id(services, project)
    other = TestClient(client.app)
    other_csrf = signed_in(other, project.api_token)  # the same token, another session
    assert other_csrf != csrf
    for path, fields in post_forms(str(registry.id), managed):
        for sent in ({}, {"csrf": ""}, {"csrf": other_csrf}, {"csrf": csrf + "x"}):
            answer = client.post(path, data={**fields, **sent}, follow_redirects=False)
            assert answer.status_code == 403, (path, sent, answer.text)
            assert "did not come from this console" in errors_of(answer)[0]
        # Even with the right token, a request a browser marks as cross-site is refused.
        cross = client.post(
            path,
            data={**fields, "csrf": csrf},
            headers={"Sec-Fetch-Site": "cross-site"},
            follow_redirects=False,
        )
        assert cross.status_code == 403, path
    assert services.registries.get(project.id, str(registry.id)).name == "Hub"
    assert external_count(services, project.id) == 1
    assert not services.registries.get(project.id, managed).has_credentials

    revoke_path = f"/registries/{managed}/credentials/revoke"
    services.credentials.generate(project.id, managed)
    assert client.post(revoke_path, data={}, follow_redirects=False).status_code == 403
    assert services.registries.get(project.id, managed).has_credentials
    rotate_path = f"/registries/{managed}/credentials/rotate"
    assert client.post(rotate_path, data={"grace_period": "0"}).status_code == 403
    assert "credentials.rotated" not in actions_of(services, project.id)


def test_the_sign_in_form_needs_its_own_cookie_against_login_csrf(client, project):
    # Another site posting its own token would sign the user in to the attacker's project.
    answer = client.post(
        "/sign-in", data={"nonce": "made-up", "token": project.api_token}, follow_redirects=False
    )
    assert answer.status_code == 403
    assert set_cookie_headers(answer, COOKIE) == []
    assert client.get("/", follow_redirects=False).status_code == 303


# -- escaping and headers -----------------------------------------------------------------------


def test_a_registry_name_is_escaped_on_every_page(client, services, project):
    csrf = signed_in(client, project.api_token)
    created = client.post(
        "/registries/new",
        data={"csrf": csrf, "name": EVIL_NAME, "registry_type": "docker_hub"},
        follow_redirects=False,
    )
    assert created.status_code == 303, created.text
    registry_id = created.headers["location"].split("/")[2].split("?")[0]
    pages = ["/", f"/registries/{registry_id}", f"/registries/{registry_id}/edit"]
    pages.append(f"/registries/{registry_id}/delete")
    for path in pages:
        page = client.get(path)
        assert page.status_code == 200, path
        assert "<script>alert" not in page.text, path
        assert "<img src=x" not in page.text, path
        assert "&lt;script&gt;alert(" in page.text, path
        policy = page.headers["content-security-policy"]
        assert "script-src 'self'" in policy and "default-src 'none'" in policy
        assert page.headers["x-frame-options"] == "DENY"
        assert page.headers["cache-control"] == "no-store"
    # The only script the pages load is Dockyard's own, from Dockyard.
    assert re.findall(r"<script[^>]*>", client.get("/").text) == [
        '<script src="/static/console.js" defer>'
    ]


def test_static_files_are_served_by_dockyard_itself(client):
    css = client.get("/static/console.css")
    assert css.status_code == 200
    assert css.headers["content-type"].startswith("text/css")
    script = client.get("/static/console.js")
    assert "navigator.clipboard" in script.text
    assert client.get("/static/../app.py").status_code == 404


def test_the_console_stays_out_of_the_openapi_document(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert all(path.startswith("/v1/") for path in paths), paths


def test_it_can_be_switched_off(make_client):
    client = make_client(console=False)
    assert client.get("/", follow_redirects=False).status_code == 404
    assert client.get("/sign-in").status_code == 404
    assert client.get("/static/console.css").status_code == 404
    assert client.get("/healthz").status_code == 200


# -- another project's registries ---------------------------------------------------------------


def test_another_projects_registry_is_the_same_404_page_as_a_missing_one(client, services, project):
    csrf = signed_in(client, project.api_token)
    other = create_project(services.db, "Globex")
    theirs = services.registries.create(other.id, {"name": "Theirs", "registry_type": "ghcr"})
    their_managed = managed_id(services, other)
    services.credentials.generate(other.id, their_managed)
    missing = str(uuid.uuid4())

    def answers(registry: str, managed: str) -> list[tuple[int, str]]:
        got = []
        for path in (f"/registries/{registry}", f"/registries/{registry}/edit"):
            got.append(client.get(path))
        got.append(client.get(f"/registries/{registry}/delete"))
        got.append(client.get(f"/registries/{managed}/credentials/revoke"))
        got.append(client.get(f"/registries/{managed}/credentials/rotate"))
        for path, fields in post_forms(registry, managed)[1:]:
            got.append(client.post(path, data={**fields, "csrf": csrf}))
        got.append(client.post(f"/registries/{managed}/credentials/revoke", data={"csrf": csrf}))
        return [(answer.status_code, answer.text) for answer in got]

    seen = answers(str(theirs.id), their_managed)
    assert seen == answers(missing, missing)
    assert {status for status, _ in seen} == {404}
    assert "Theirs" not in str(seen)
    # Nothing of theirs changed.
    assert services.registries.get(other.id, str(theirs.id)).name == "Theirs"
    assert services.registries.get(other.id, their_managed).has_credentials
    assert "credentials.rotated" not in actions_of(services, other.id)


# -- forms --------------------------------------------------------------------------------------


def test_a_refused_form_keeps_its_values_but_never_the_password(client, services, project):
    csrf = signed_in(client, project.api_token)
    answer = client.post(
        "/registries/new",
        data={
            "csrf": csrf,
            "name": "Mirror",
            "registry_type": "custom",
            "hostname": "https://mirror.example.com",
            "username": "ci-bot",
            "password": "s3cret-never-shown",
        },
    )
    assert answer.status_code == 400
    assert errors_of(answer) == [
        "Hostname must not include a scheme such as https://; give only the host, "
        "e.g. registry.example.com or registry.example.com:5000"
    ]
    assert 'value="Mirror"' in answer.text
    assert 'value="https://mirror.example.com"' in answer.text
    assert 'value="ci-bot"' in answer.text
    assert '<option value="custom" selected>' in answer.text
    assert "s3cret-never-shown" not in answer.text
    assert external_count(services, project.id) == 0


def test_editing_keeps_blank_credentials_and_the_box_removes_them(client, services, project):
    csrf = signed_in(client, project.api_token)
    registry = services.registries.create(
        project.id,
        {"name": "Hub", "registry_type": "docker_hub", "username": "me", "password": "pw"},
    )
    path = f"/registries/{registry.id}/edit"
    form = client.get(path)
    assert 'value="Hub"' in form.text and "pw" not in form.text
    kept = client.post(path, data={"csrf": csrf, "name": "Hub 2", "hostname": "docker.io"})
    assert kept.status_code == 200 and "The registry was saved." in kept.text
    view = services.registries.get(project.id, str(registry.id))
    assert (view.name, view.has_credentials) == ("Hub 2", True)

    half = client.post(path, data={"csrf": csrf, "name": "Hub 2", "clear_credentials": ""})
    assert services.registries.get(project.id, str(registry.id)).has_credentials, half.text
    cleared = client.post(path, data={"csrf": csrf, "name": "Hub 2", "clear_credentials": "1"})
    assert cleared.status_code == 200
    assert not services.registries.get(project.id, str(registry.id)).has_credentials

    refused = client.post(path, data={"csrf": csrf, "name": "", "hostname": "docker.io"})
    assert refused.status_code == 400
    assert errors_of(refused) == ["Name can't be blank"]


def test_managed_registries_cannot_be_edited_or_deleted_in_the_console(client, services, project):
    csrf = signed_in(client, project.api_token)
    managed = managed_id(services, project)
    for path in (f"/registries/{managed}/edit", f"/registries/{managed}/delete"):
        page = client.get(path)
        assert page.status_code == 400
        assert "managed by the platform" in errors_of(page)[0]
        posted = client.post(path, data={"csrf": csrf, "name": "Mine"})
        assert posted.status_code == 400
    assert services.registries.get(project.id, managed).name == "Nodion Registry (Local)"


def test_an_oversized_form_is_refused_with_a_page(make_client, services):
    project = create_project(services.db, "Acme")
    client = make_client(max_body_bytes=1024)
    csrf = signed_in(client, project.api_token)
    answer = client.post(
        "/registries/new", data={"csrf": csrf, "name": "x" * 2000, "registry_type": "ghcr"}
    )
    assert answer.status_code == 413
    assert "too large" in errors_of(answer)[0]
    assert answer.headers["content-type"].startswith("text/html")


def test_console_changes_are_audited_as_the_signed_in_token(client, services, project):
    csrf = signed_in(client, project.api_token)
    managed = managed_id(services, project)
    client.post("/registries/new", data={"csrf": csrf, "name": "Hub", "registry_type": "ghcr"})
    generated = client.post(f"/registries/{managed}/credentials", data={"csrf": csrf})
    assert generated.status_code == 200
    auth = {"Authorization": f"Bearer {project.api_token}"}
    events = client.get("/v1/audit_events", headers=auth).json()["audit_events"]
    token_ids = {event["actor"] for event in events}
    assert [event["action"] for event in events] == ["credentials.generated", "registry.created"]
    assert {event["actor_type"] for event in events} == {"api_token"}
    assert len(token_ids) == 1 and project.api_token not in str(events)


def test_generated_credentials_are_shown_once_with_their_login_line(client, services, project):
    csrf = signed_in(client, project.api_token)
    managed = managed_id(services, project)
    page = client.post(f"/registries/{managed}/credentials", data={"csrf": csrf})
    assert page.status_code == 200
    username = html.unescape(re.search(r'<code id="username">([^<]+)</code>', page.text)[1])
    password = html.unescape(re.search(r'<code id="password"[^>]*>([^<]+)</code>', page.text)[1])
    login = html.unescape(re.search(r'<code id="login">([^<]+)</code>', page.text)[1])
    assert re.fullmatch(r"robot\$project-[0-9a-f]{8}", username)
    assert (
        login == f"echo '{password}' | docker login localhost:5000 -u '{username}' --password-stdin"
    )
    token = client.get(
        "/auth/token",
        params={"scope": f"repository:{project.id}/app:pull"},
        auth=(username, password),
    )
    assert token.status_code == 200
    # Never again: the registry's page does not have it, and a second POST is refused.
    assert password not in client.get(f"/registries/{managed}").text
    again = client.post(f"/registries/{managed}/credentials", data={"csrf": csrf})
    assert again.status_code == 400
    assert "Credentials already exist" in errors_of(again)[0]
    assert password not in again.text


# -- expiry and rotation ------------------------------------------------------------------------


def shown_secret(page: httpx.Response) -> tuple[str, str]:
    """The username and password a page shows once."""
    username = re.search(r'<code id="username">([^<]+)</code>', page.text)
    password = re.search(r'<code id="password"[^>]*>([^<]+)</code>', page.text)
    assert username and password, page.text
    return html.unescape(username[1]), html.unescape(password[1])


def text_of(page: httpx.Response, element_id: str) -> str:
    found = re.search(rf'id="{element_id}">(.*?)</(?:p|dd|span)>', page.text, re.S)
    assert found, page.text
    return " ".join(html.unescape(re.sub(r"<[^>]+>", "", found[1])).split())


def test_rotating_keeps_the_old_password_for_the_grace_period_chosen(
    timed, clock, services, project
):
    csrf = signed_in(timed, project.api_token)
    managed = managed_id(services, project)
    shown = timed.app.state.console.templates.filters["when"]  # how the pages write a time

    form = timed.get(f"/registries/{managed}")
    assert '<option value="" selected>never</option>' in form.text
    generated = timed.post(
        f"/registries/{managed}/credentials", data={"csrf": csrf, "expires_in": str(90 * DAY)}
    )
    assert generated.status_code == 200, generated.text
    username, first = shown_secret(generated)
    assert text_of(generated, "expires") == shown(clock.moment + timedelta(days=90))
    page = timed.get(f"/registries/{managed}")
    assert text_of(page, "credentials-expire-at") == shown(clock.moment + timedelta(days=90))
    assert "Rotate password" in page.text

    confirm = timed.get(f"/registries/{managed}/credentials/rotate")
    assert confirm.status_code == 200
    assert '<option value="86400" selected>for 1 day</option>' in confirm.text  # the default
    clock.advance(600)
    rotated = timed.post(
        f"/registries/{managed}/credentials/rotate", data={"csrf": csrf, "grace_period": "3600"}
    )
    assert rotated.status_code == 200, rotated.text
    same_user, second = shown_secret(rotated)
    assert same_user == username and second != first
    login = html.unescape(re.search(r'<code id="login">([^<]+)</code>', rotated.text)[1])
    assert login == (
        f"echo '{second}' | docker login localhost:5000 -u '{username}' --password-stdin"
    )
    until = shown(clock.moment + timedelta(hours=1))
    assert text_of(rotated, "old-password") == (
        f"The old password keeps working until {until}: give CI systems and pull secrets "
        "the new one before then."
    )
    # The new password gets the lifetime again, counted from the rotation.
    assert text_of(rotated, "expires") == shown(clock.moment + timedelta(days=90))

    assert logs_in(timed, username, first) and logs_in(timed, username, second)
    clock.advance(3601)
    assert not logs_in(timed, username, first)
    assert logs_in(timed, username, second)

    # "Not at all": the password just replaced stops with the answer.
    again = timed.post(
        f"/registries/{managed}/credentials/rotate", data={"csrf": csrf, "grace_period": "0"}
    )
    _, third = shown_secret(again)
    assert text_of(again, "old-password") == "The old password has stopped working."
    assert not logs_in(timed, username, second)
    assert logs_in(timed, username, third)

    # A hand-made grace period the form does not offer gets the domain's sentence.
    refused = timed.post(
        f"/registries/{managed}/credentials/rotate",
        data={"csrf": csrf, "grace_period": str(30 * DAY)},
    )
    assert refused.status_code == 400
    assert errors_of(refused)[0].startswith("grace_period must be a whole number of seconds")
    assert logs_in(timed, username, third)
    for password in (first, second, third):
        assert password not in timed.get(f"/registries/{managed}").text
    changes = [a for a in actions_of(services, project.id) if a.startswith("credentials.")]
    assert changes == [
        "credentials.rotated",
        "credentials.rotated",
        "credentials.generated",
    ]


def test_rotation_and_expiry_refusals_are_pages_that_change_nothing(client, services, project):
    csrf = signed_in(client, project.api_token)
    managed = managed_id(services, project)
    hub = services.registries.create(
        project.id,
        {"name": "Hub", "registry_type": "docker_hub", "username": "me", "password": "pw"},
    )
    none_yet = client.get(f"/registries/{managed}/credentials/rotate")
    assert none_yet.status_code == 400
    assert errors_of(none_yet) == [
        "This registry has no credentials to rotate; generate them first"
    ]
    external = client.get(f"/registries/{hub.id}/credentials/rotate")
    assert external.status_code == 400
    assert "changed by editing it" in errors_of(external)[0]
    posted = client.post(f"/registries/{hub.id}/credentials/rotate", data={"csrf": csrf})
    assert posted.status_code == 400
    assert errors_of(posted)[0].startswith("Credentials can only be rotated for")

    short = client.post(
        f"/registries/{managed}/credentials", data={"csrf": csrf, "expires_in": "5"}
    )
    assert short.status_code == 400
    assert errors_of(short)[0].startswith("expires_in must be a whole number of seconds")
    assert not services.registries.get(project.id, managed).has_credentials
    assert "credentials_expire_at" not in client.get(f"/registries/{managed}").text
    assert actions_of(services, project.id) == ["registry.created"]


# -- browsing -----------------------------------------------------------------------------------


def test_browsing_another_projects_images_is_the_same_404_page_as_missing_ones(
    client, services, project, robot, other_robot
):
    csrf = signed_in(client, project.api_token)
    theirs = OCIClient(client, other_robot.username, other_robot.password)
    their_repo = f"{other_robot.project_id}/app"
    theirs.push_image(their_repo, "v1")
    mine = robot.registry_id
    missing = str(uuid.uuid4())

    def answers(registry: str, repository: str) -> list[tuple[int, str]]:
        query = {"repository": repository, "tag": "v1"}
        got = [
            client.get(f"/registries/{registry}/repositories"),
            client.get(f"/registries/{registry}/repositories/{repository}"),
            client.get(f"/registries/{registry}/delete-tag", params=query),
            client.get(f"/registries/{registry}/delete-repository", params=query),
            client.post(f"/registries/{registry}/delete-tag", data={**query, "csrf": csrf}),
            client.post(f"/registries/{registry}/delete-repository", data={**query, "csrf": csrf}),
        ]
        return [(answer.status_code, answer.text) for answer in got]

    absent = answers(missing, f"{project.id}/nothing")
    assert {status for status, _ in absent} == {404}
    # Their registry by its id, and their repository's name under my registry.
    assert answers(other_robot.registry_id, their_repo) == absent
    assert answers(mine, their_repo)[1:] == absent[1:]
    assert theirs.tags(their_repo).json()["tags"] == ["v1"]


def test_an_external_registry_or_a_bad_page_is_refused_with_the_sentence(client, services, project):
    signed_in(client, project.api_token)
    hub = services.registries.create(project.id, {"name": "Hub", "registry_type": "docker_hub"})
    page = client.get(f"/registries/{hub.id}/repositories")
    assert page.status_code == 400
    assert errors_of(page) == [
        "Only managed registries can be browsed: this is an external registry (docker_hub), "
        "whose repositories are kept at docker.io"
    ]
    managed = managed_id(services, project)
    for bad in ("0", "-1", "x", "1e3", "99999999999"):
        answer = client.get(f"/registries/{managed}/repositories", params={"page": bad})
        assert answer.status_code == 400, bad
    bad_name = client.get(f"/registries/{managed}/repositories/{project.id}/UPPER")
    assert bad_name.status_code == 400
    assert errors_of(bad_name)[0].startswith("Repository name is invalid")


def test_deleting_a_tag_or_a_repository_takes_the_csrf_token_and_is_audited(
    client, services, project, robot, oci
):
    csrf = signed_in(client, project.api_token)
    name = f"{project.id}/shop/web"
    oci.push_image(name, "v1")
    oci.push_image(name, "v2", layers=[b"another layer"])
    registry = robot.registry_id
    tag_form = {"repository": name, "tag": "v1"}

    confirm = client.get(f"/registries/{registry}/delete-tag", params=tag_form)
    assert confirm.status_code == 200 and "Delete this tag?" in confirm.text
    refused = client.post(f"/registries/{registry}/delete-tag", data=tag_form)
    assert refused.status_code == 403
    assert oci.tags(name).json()["tags"] == ["v1", "v2"]

    done = client.post(
        f"/registries/{registry}/delete-tag",
        data={**tag_form, "csrf": csrf},
        follow_redirects=False,
    )
    assert done.status_code == 303
    assert (
        done.headers["location"] == f"/registries/{registry}/repositories/{name}?notice=tag_deleted"
    )
    assert oci.tags(name).json()["tags"] == ["v2"]
    again = client.post(f"/registries/{registry}/delete-tag", data={**tag_form, "csrf": csrf})
    assert again.status_code == 404
    # Nor does the page ask before deleting a tag that is not there.
    asked = client.get(f"/registries/{registry}/delete-tag", params=tag_form)
    assert asked.status_code == 404
    assert "Delete this tag?" not in asked.text

    repo_form = {"repository": name}
    assert (
        client.post(f"/registries/{registry}/delete-repository", data=repo_form).status_code == 403
    )
    gone = client.post(
        f"/registries/{registry}/delete-repository", data={**repo_form, "csrf": csrf}
    )
    assert gone.status_code == 200
    assert "The repository was deleted" in gone.text
    assert oci.tags(name).status_code == 404

    auth = {"Authorization": f"Bearer {project.api_token}"}
    events = client.get("/v1/audit_events", headers=auth).json()["audit_events"]
    actions = [event["action"] for event in events]
    assert actions[:2] == ["repository.deleted", "tag.deleted"]


def test_odd_input_gets_a_page_never_a_500(client, services, project):
    csrf = signed_in(client, project.api_token)
    managed = managed_id(services, project)
    gets = [
        "/registries/%00",
        "/registries/" + "f" * 5000,
        f"/registries/{managed.upper()}",
        f"/registries/{managed}/repositories/%ff%fe",
        f"/registries/{managed}/repositories/{project.id}/a%252Fb",
        f"/registries/{managed}/repositories/",
        f"/registries/{managed}/repositories?page=\u0661",
        f"/registries/{managed}/repositories?page=" + "9" * 400,
        f"/registries/{managed}/delete-tag?repository={project.id}/app&tag=%0a",
        f"/registries/{managed}/delete-tag",
        "/sign-in?ended=%ff",
        "/?notice=<script>",
    ]
    for path in gets:
        answer = client.get(path, follow_redirects=False)
        assert answer.status_code < 500, (path, answer.text)
        assert "<script>" not in answer.text.split("</head>")[-1], path
    posts = [
        (
            "/registries/new",
            {"content": b"[1, 2]", "headers": {"content-type": "application/json"}},
        ),
        (
            "/registries/new",
            {"content": b"--x\r\n", "headers": {"content-type": "multipart/form-data; boundary=x"}},
        ),
        (
            "/registries/new",
            {
                "content": b"\xff\xfe=\xff",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
        ),
        (
            "/registries/new",
            {
                "content": b"csrf=" + csrf.encode() + b"&name=%00",
                "headers": {"content-type": "application/x-www-form-urlencoded"},
            },
        ),
        ("/sign-in", {"content": b'{"token": 5}', "headers": {"content-type": "application/json"}}),
        ("/sign-in", {"content": b"x", "headers": {"content-type": "text/plain"}}),
    ]
    for path, request in posts:
        answer = client.post(path, follow_redirects=False, **request)
        assert answer.status_code < 500, (path, request, answer.text)
    for value in ("%ff", "v1:" + "A" * 100, '"quoted"', "a;b"):
        other = TestClient(client.app)
        other.cookies.set(COOKIE, value)
        assert other.get("/", follow_redirects=False).status_code == 303, value
    assert external_count(services, project.id) == 0


# -- checks of external registries --------------------------------------------------------------

SETTLE_WITHIN = 20.0


@pytest.fixture
def checking(make_client):
    """A console whose app checks external registries (its lifespan runs the Verifier)."""
    app = make_client(
        verify_registries=True, verify_connect_timeout_seconds=2, verify_timeout_seconds=3
    )
    with app as client:
        yield client


def status_on(page: httpx.Response) -> str:
    found = re.search(r'class="status status-([a-z_]+)"', page.text)
    assert found, page.text
    return found.group(1)


def settled(client: TestClient, registry_id: str) -> str:
    """The status the registry's page shows once its check is done, within a bound."""
    deadline = time.monotonic() + SETTLE_WITHIN
    while True:
        status = status_on(client.get(f"/registries/{registry_id}"))
        if status != "verifying":
            return status
        assert time.monotonic() < deadline, f"still verifying after {SETTLE_WITHIN} s"
        time.sleep(0.02)  # a poll's pace, not a wait for something to happen


def test_a_registry_added_or_edited_in_the_console_is_checked_at_once(checking, project):
    csrf = signed_in(checking, project.api_token)
    added = checking.post(
        "/registries/new",
        data={
            "csrf": csrf,
            "name": "Mirror",
            "registry_type": "custom",
            "hostname": f"127.0.0.1:{free_port()}",  # nothing listens there
        },
        follow_redirects=False,
    )
    assert added.status_code == 303, added.text
    registry_id = added.headers["location"].split("/")[2].split("?")[0]
    # Not left for the sweep of forgotten checks (a minute or more): checked now.
    assert settled(checking, registry_id) == "unreachable"
    edited = checking.post(
        f"/registries/{registry_id}/edit",
        data={"csrf": csrf, "name": "Mirror", "hostname": f"127.0.0.1:{free_port()}"},
        follow_redirects=False,
    )
    assert edited.status_code == 303, edited.text
    assert status_on(checking.get(f"/registries/{registry_id}")) in ("verifying", "unreachable")
    assert settled(checking, registry_id) == "unreachable"


def test_check_again_asks_for_a_new_check_and_the_page_explains_the_result(
    checking, project, tmp_path
):
    htpasswd = tmp_path / "htpasswd"
    htpasswd.write_text(htpasswd_line("alice", "pw-alice") + "\n")
    port = free_port()
    csrf = signed_in(checking, project.api_token)
    fields = {"csrf": csrf, "name": "Mirror", "hostname": f"127.0.0.1:{port}"}
    added = checking.post(
        "/registries/new",
        data={**fields, "registry_type": "custom", "username": "alice", "password": "pw-alice"},
        follow_redirects=False,
    )
    registry_id = added.headers["location"].split("/")[2].split("?")[0]
    path = f"/registries/{registry_id}"
    assert settled(checking, registry_id) == "unreachable"  # nothing listens there yet
    page = checking.get(path)
    assert text_of(page, "status-note") == "Dockyard could not reach the registry"
    assert "Check the hostname, or check again once the registry is up" in page.text
    assert f'action="{path}/verify"' in page.text
    assert "Dockyard could not reach the registry" in checking.get("/").text

    # The registry comes up where it was said to be; checking again finds it.
    distribution = start_distribution(
        tmp_path / "distribution", {"htpasswd": {"realm": "r", "path": str(htpasswd)}}, port=port
    )
    try:
        assert checking.post(f"{path}/verify", data={}).status_code == 403
        assert status_on(checking.get(path)) == "unreachable"
        asked = checking.post(f"{path}/verify", data={"csrf": csrf}, follow_redirects=False)
        assert asked.status_code == 303
        assert asked.headers["location"] == f"{path}?notice=checking"
        assert status_on(checking.get(asked.headers["location"])) in ("verifying", "available")
        assert settled(checking, registry_id) == "available"
        assert 'id="status-note"' not in checking.get(path).text

        # A wrong password stored by editing is checked at once, and said so.
        edited = checking.post(f"{path}/edit", data={**fields, "password": "not-alices"})
        assert edited.status_code == 200, edited.text
        assert settled(checking, registry_id) == "authentication_failed"
        page = checking.get(path)
        assert text_of(page, "status-note") == (
            "The registry refused the stored username and password"
        )
        assert "Edit the registry to store the right username and password" in page.text
    finally:
        distribution.stop()


def test_a_registry_being_checked_says_so_and_reloads_until_the_result(checking, project):
    signed_in(checking, project.api_token)
    # Created by the domain alone, nothing follows its check: it stays verifying until the
    # sweep of forgotten checks (a minute or more), longer than this test.
    services = checking.app.state.console.services
    pending = services.registries.create(
        project.id, {"name": "Slow", "registry_type": "custom", "hostname": "127.0.0.1:9"}
    )
    page = checking.get(f"/registries/{pending.id}")
    assert status_on(page) == "verifying"
    assert text_of(page, "status-note") == "Checking…"
    assert '<meta http-equiv="refresh" content="2">' in page.text  # works without script
    assert "Check again" not in page.text
    listing = checking.get("/")
    assert "Checking…" in listing.text and 'http-equiv="refresh"' in listing.text


def test_with_checks_off_the_console_says_so_and_offers_no_check(client, services, project):
    csrf = signed_in(client, project.api_token)
    hub = services.registries.create(project.id, {"name": "Hub", "registry_type": "docker_hub"})
    path = f"/registries/{hub.id}"
    page = client.get(path)
    assert status_on(page) == "available"  # unchecked, as /v1 says it
    assert "not checked: this server does not check external registries" in page.text
    assert "Check again" not in page.text and 'http-equiv="refresh"' not in page.text
    assert "This server does not check them" in client.get("/").text
    # A hand-made request gets the domain's sentence and changes nothing.
    refused = client.post(f"{path}/verify", data={"csrf": csrf})
    assert refused.status_code == 400
    assert "DOCKYARD_VERIFY_REGISTRIES=false" in errors_of(refused)[0]
    assert status_on(client.get(path)) == "available"
    managed = managed_id(services, project)
    assert "Check again" not in client.get(f"/registries/{managed}").text
    always = client.post(f"/registries/{managed}/verify", data={"csrf": csrf})
    assert always.status_code == 400
    assert "always available" in errors_of(always)[0]
