"""The web console clicked through in a real browser: Debian's chromium driven by Playwright,
against a real `dockyard serve`, on SQLite and on PostgreSQL.

One browser for the module and one server per database; every test signs in to a project
of its own in a fresh browser context (its own cookies), so the tests do not depend on
each other's data.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from dockyard.db import Database
from dockyard.domain.projects import NewProject, create_project
from tests.conftest import empty_postgres, require_or_skip
from tests.oci_client import OCIClient
from tests.support import Server, start_server

CHROMIUM = "/usr/bin/chromium"
EVIL_NAME = "<script>document.title='pwned'</script>"

try:
    from playwright.sync_api import Browser, Page, expect, sync_playwright
except ImportError:  # pragma: no cover - the skip below says what to install
    sync_playwright = None  # type: ignore[assignment]


@dataclass
class Site:
    server: Server
    database_url: str

    @property
    def url(self) -> str:
        return self.server.url

    def new_project(self, name: str = "Acme") -> NewProject:
        db = Database(self.database_url)
        try:
            return create_project(db, name)
        finally:
            db.dispose()

    def api(self, project: NewProject) -> httpx.Client:
        auth = {"Authorization": f"Bearer {project.api_token}"}
        return httpx.Client(base_url=self.url, headers=auth, timeout=30)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if sync_playwright is None:
        require_or_skip("the playwright package is missing: pip install 'playwright>=1.40'")
    if not Path(CHROMIUM).exists():
        require_or_skip(f"no chromium at {CHROMIUM}: apt-get install chromium")
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def site(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    sqlite_template: Path,
) -> Iterator[Site]:
    tmp = tmp_path_factory.mktemp(f"console-{request.param}")
    if request.param == "sqlite":
        (tmp / "data").mkdir()
        shutil.copy(sqlite_template, tmp / "data" / "dockyard.db")
        url = f"sqlite:///{tmp / 'data' / 'dockyard.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
        empty_postgres(url)
    server = start_server(tmp, url)
    yield Site(server, url)
    server.stop()


@pytest.fixture
def project(site: Site) -> NewProject:
    return site.new_project()


def open_page(browser: Browser, site: Site, **options: Any) -> Iterator[Page]:
    context = browser.new_context(
        base_url=site.url, viewport={"width": 1280, "height": 800}, **options
    )
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert errors == [], errors  # no script error on any page


@pytest.fixture
def page(browser: Browser, site: Site) -> Iterator[Page]:
    yield from open_page(browser, site, permissions=["clipboard-read", "clipboard-write"])


def sign_in(page: Page, token: str) -> None:
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()


def errors_on(page: Page) -> list[str]:
    return page.locator(".errors li").all_inner_texts()


# -- the flows ----------------------------------------------------------------------------------


def test_sign_in_with_a_bad_then_a_good_token_and_sign_out(page: Page, site: Site, project):
    sign_in(page, "dky_not-a-token-at-all")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert errors_on(page) == [
        "That API token is not valid or has been revoked; check it and try again"
    ]
    expect(page.get_by_label("API token")).to_have_value("")  # not echoed back

    page.get_by_label("API token").fill(project.api_token)
    page.get_by_role("button", name="Sign in").click()
    expect(page).to_have_url(f"{site.url}/")
    expect(page.get_by_role("heading", name="Container registries")).to_be_visible()
    expect(page.locator(".project")).to_have_text("Acme")
    expect(page.get_by_role("link", name="Nodion Registry (Local)")).to_be_visible()
    assert not page.evaluate("document.cookie")  # HttpOnly: no script can read the session

    page.get_by_role("button", name="Sign out").click()
    expect(page).to_have_url(re.compile(r"/sign-in\?signed_out=1$"))
    expect(page.get_by_text("You are signed out.")).to_be_visible()
    page.goto("/")
    expect(page).to_have_url(re.compile(r"/sign-in$"))
    assert project.api_token not in site.server.log()


def test_add_edit_and_delete_an_external_registry(page: Page, site: Site, project):
    sign_in(page, project.api_token)
    page.get_by_role("link", name="Add external registry").click()
    page.get_by_label("Name", exact=True).fill(EVIL_NAME)
    page.get_by_label("Type", exact=True).select_option("custom")
    page.get_by_label("Username").fill("ci-bot")
    page.get_by_label("Password or access token").fill("first-password")
    page.get_by_role("button", name="Add registry").click()
    # A custom registry needs a hostname: the API's sentence, the values kept, bar the password.
    assert errors_on(page) == [
        "Hostname can't be blank for a custom registry; give the registry's host, "
        "e.g. registry.example.com or registry.example.com:5000"
    ]
    expect(page.get_by_label("Name", exact=True)).to_have_value(EVIL_NAME)
    expect(page.get_by_label("Type", exact=True)).to_have_value("custom")
    expect(page.get_by_label("Username")).to_have_value("ci-bot")
    expect(page.get_by_label("Password or access token")).to_have_value("")

    page.get_by_label("Hostname").fill("Mirror.Example.com:5000")
    page.get_by_label("Password or access token").fill("first-password")
    page.get_by_role("button", name="Add registry").click()
    expect(page.get_by_text("The registry was added.")).to_be_visible()
    expect(page.get_by_role("heading", level=1)).to_have_text(EVIL_NAME)  # shown as text
    assert page.title() != "pwned"

    api = site.api(project)
    [external] = [
        r
        for r in api.get("/v1/container_registries").json()["container_registries"]
        if r["registry_type"] != "nodion"
    ]
    assert (external["name"], external["hostname"], external["has_credentials"]) == (
        EVIL_NAME,
        "mirror.example.com:5000",
        True,
    )

    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Name", exact=True).fill("Mirror")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_text("The registry was saved.")).to_be_visible()
    page.get_by_role("link", name="Edit").click()
    page.get_by_label("Remove the stored credentials").check()
    page.get_by_role("button", name="Save").click()
    changed = api.get(f"/v1/container_registries/{external['id']}").json()["container_registry"]
    assert (changed["name"], changed["has_credentials"]) == ("Mirror", False)

    page.get_by_role("link", name="Registries").first.click()
    expect(page.get_by_role("link", name="Mirror")).to_be_visible()
    page.get_by_role("link", name="Mirror").click()
    page.get_by_role("link", name="Delete").click()
    expect(page.get_by_role("heading", name="Delete this registry?")).to_be_visible()
    page.get_by_role("link", name="Cancel").click()  # changing one's mind keeps it
    assert api.get(f"/v1/container_registries/{external['id']}").status_code == 200
    page.get_by_role("link", name="Delete").click()
    page.get_by_role("button", name="Delete registry").click()
    expect(page.get_by_text("The registry was deleted.")).to_be_visible()
    expect(page.get_by_role("link", name="Mirror")).to_have_count(0)
    assert api.get(f"/v1/container_registries/{external['id']}").status_code == 404


def test_generate_copy_use_and_revoke_credentials(page: Page, site: Site, project):
    sign_in(page, project.api_token)
    page.get_by_role("link", name="Nodion Registry (Local)").click()
    page.get_by_role("button", name="Generate credentials").click()
    expect(page.get_by_role("heading", name="Credentials generated")).to_be_visible()
    username = page.locator("#username").inner_text()
    password = page.locator("#password").inner_text()
    login = page.locator("#login").inner_text()
    host = f"localhost:{site.server.port}"
    assert re.fullmatch(r"robot\$project-[0-9a-f]{8}", username)
    assert login == f"echo '{password}' | docker login {host} -u '{username}' --password-stdin"

    # The copy button puts exactly the line on the clipboard.
    page.locator("button.copy[data-copy='login']").click()
    expect(page.locator("button.copy[data-copy='login']")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == login

    # A real shell, with `docker` standing in, gets the right arguments and password.
    shell = subprocess.run(
        ["bash", "-c", 'docker() { printf "%s\\n" "$@"; cat; }\n' + login],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shell.stdout.splitlines() == [
        "login",
        host,
        "-u",
        username,
        "--password-stdin",
        password,
    ]

    # The password works: a token from /auth/token, and /v2/ with it.
    scope = f"repository:{project.id}/app:pull,push"
    token = httpx.get(
        f"{site.url}/auth/token",
        params={"service": host, "scope": scope},
        auth=(username, password),
    )
    assert token.status_code == 200, token.text
    bearer = {"Authorization": f"Bearer {token.json()['token']}"}
    assert httpx.get(f"{site.url}/v2/", headers=bearer).status_code == 200

    page.get_by_role("link", name="Done").click()
    expect(page.locator("body")).not_to_contain_text(password)  # shown once only
    page.get_by_role("link", name="Revoke credentials").click()
    page.get_by_role("button", name="Revoke credentials").click()
    expect(page.get_by_text("The credentials were revoked")).to_be_visible()
    expect(page.get_by_role("button", name="Generate credentials")).to_be_visible()
    refused = httpx.get(
        f"{site.url}/auth/token",
        params={"service": host, "scope": scope},
        auth=(username, password),
    )
    assert refused.status_code == 401


def test_rotate_the_password_copy_it_and_log_in(page: Page, site: Site, project):
    sign_in(page, project.api_token)
    page.get_by_role("link", name="Nodion Registry (Local)").click()
    page.get_by_label("Expires").select_option(label="after 90 days")
    page.get_by_role("button", name="Generate credentials").click()
    username = page.locator("#username").inner_text()
    old = page.locator("#password").inner_text()
    expect(page.locator("#expires")).to_be_visible()
    page.get_by_role("link", name="Done").click()
    expect(page.locator("#credentials-expire-at")).to_be_visible()

    page.get_by_role("link", name="Rotate password").click()
    expect(page.get_by_role("heading", name="Rotate the password?")).to_be_visible()
    grace = page.get_by_label("The old password keeps working")
    expect(grace).to_have_value("86400")  # a day unless chosen otherwise
    grace.select_option(label="for 1 hour")
    page.get_by_role("button", name="Rotate password").click()
    expect(page.get_by_role("heading", name="New password")).to_be_visible()
    expect(page.locator("#username")).to_have_text(username)
    expect(page.locator("#old-password")).to_contain_text("The old password keeps working until")
    new = page.locator("#password").inner_text()
    assert new != old

    page.locator("button.copy[data-copy='password']").click()
    expect(page.locator("button.copy[data-copy='password']")).to_have_text("Copied")
    copied = page.evaluate("navigator.clipboard.readText()")
    assert copied == new
    host = f"localhost:{site.server.port}"
    assert page.locator("#login").inner_text() == (
        f"echo '{copied}' | docker login {host} -u '{username}' --password-stdin"
    )
    # The copied password logs in, and the old one still does, within its hour.
    for password in (copied, old):
        token = httpx.get(
            f"{site.url}/auth/token",
            params={"service": host, "scope": f"repository:{project.id}/app:pull"},
            auth=(username, password),
        )
        assert token.status_code == 200, token.text
    page.get_by_role("link", name="Done").click()
    expect(page.locator("body")).not_to_contain_text(new)  # shown once only


def test_a_post_without_the_csrf_token_is_refused(page: Page, site: Site, project):
    sign_in(page, project.api_token)
    page.goto("/registries/new")
    # The form as another page would send it: every field but the hidden token.
    with page.expect_navigation() as navigation:
        page.evaluate(
            """() => {
                const form = document.querySelector("form[action='/registries/new']");
                form.querySelector("input[name=csrf]").remove();
                form.querySelector("#name").value = "Sneaky";
                form.submit();
            }"""
        )
    assert navigation.value is not None and navigation.value.status == 403
    expect(page.locator(".errors")).to_contain_text("did not come from this console")
    page.goto("/registries/new")
    # The same form with its hidden token goes through: the token is what was missing.
    page.get_by_label("Name", exact=True).fill("Honest")
    page.get_by_label("Type", exact=True).select_option("ghcr")
    page.get_by_role("button", name="Add registry").click()
    expect(page.get_by_text("The registry was added.")).to_be_visible()
    names = [
        r["name"]
        for r in site.api(project).get("/v1/container_registries").json()["container_registries"]
    ]
    assert "Honest" in names and "Sneaky" not in names


def test_another_projects_registry_is_a_404_page(page: Page, site: Site, project):
    other = site.new_project("Globex")
    theirs = site.api(other).post(
        "/v1/container_registries", json={"name": "Theirs", "registry_type": "ghcr"}
    )
    their_id = theirs.json()["container_registry"]["id"]
    sign_in(page, project.api_token)
    for registry_id in (their_id, str(uuid.uuid4())):
        answer = page.goto(f"/registries/{registry_id}/edit")
        assert answer is not None and answer.status == 404
        expect(page.get_by_role("heading", name="Not found")).to_be_visible()
        expect(page.locator("body")).not_to_contain_text("Theirs")


def test_everything_but_the_copy_button_works_without_javascript(
    browser: Browser, site: Site, project
):
    for page in open_page(browser, site, java_script_enabled=False):
        sign_in(page, project.api_token)
        page.get_by_role("link", name="Add external registry").click()
        page.get_by_label("Name", exact=True).fill("Hub")
        page.get_by_role("button", name="Add registry").click()
        expect(page.get_by_text("The registry was added.")).to_be_visible()
        page.get_by_role("link", name="Registries").first.click()
        page.get_by_role("link", name="Nodion Registry (Local)").click()
        page.get_by_role("button", name="Generate credentials").click()
        expect(page.locator("#password")).to_be_visible()
        expect(page.locator("button.copy")).to_have_count(3)
        for button in page.locator("button.copy").all():
            expect(button).to_be_hidden()  # no script, no button that would do nothing


def registry_client(site: Site, project: NewProject) -> OCIClient:
    """A /v2 client with new credentials of the managed registry, as a CI job would have."""
    api = site.api(project)
    managed = api.get("/v1/container_registries").json()["container_registries"][0]
    created = api.post(f"/v1/container_registries/{managed['id']}/credentials")
    body = created.json()["container_registry"]
    http = httpx.Client(base_url=site.url, timeout=30)
    return OCIClient(http, body["username"], body["password"], host=f"127.0.0.1:{site.server.port}")


def test_browse_repositories_and_tags_and_delete_a_tag(page: Page, site: Site, project):
    oci = registry_client(site, project)
    web, worker = f"{project.id}/shop/web", f"{project.id}/shop/worker"
    oci.push_image(web, "v1.0", layers=[b"web layer" * 1000])
    oci.push_image(web, "latest", layers=[b"web layer" * 1000])
    oci.push_image(worker, "v2", layers=[b"worker layer" * 100])
    sign_in(page, project.api_token)
    page.get_by_role("link", name="Nodion Registry (Local)").click()
    page.get_by_role("link", name="Browse repositories").click()
    expect(page.get_by_role("heading", name="Repositories")).to_be_visible()
    expect(page.locator(".usage")).to_contain_text("2 repositories")
    rows = page.locator("tbody tr")
    expect(rows).to_have_count(2)
    expect(rows.nth(0).locator("td")).to_have_text(
        ["shop/web", "2", re.compile(r"9\.\d KB"), re.compile(".")]
    )
    expect(rows.nth(1).locator("td").nth(0)).to_have_text("shop/worker")

    page.get_by_role("link", name="shop/web").click()
    expect(page.get_by_role("heading", name="shop/web")).to_be_visible()
    expect(page.locator("tbody tr td strong")).to_have_text(["latest", "v1.0"])
    expect(page.locator("tbody tr").first).to_contain_text("OCI image")

    page.get_by_role("link", name="Delete tag v1.0").click()
    expect(page.get_by_role("heading", name="Delete this tag?")).to_be_visible()
    page.get_by_role("button", name="Delete tag").click()
    expect(page.get_by_text("The tag was deleted.")).to_be_visible()
    expect(page.locator("tbody tr td strong")).to_have_text(["latest"])

    # The registry agrees: v1.0 is gone from /v2, latest still pulls.
    assert oci.tags(web).json()["tags"] == ["latest"]
    assert oci.get_manifest(web, "v1.0").status_code == 404
    assert oci.get_manifest(web, "latest").status_code == 200
