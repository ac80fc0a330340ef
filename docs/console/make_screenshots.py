"""Screenshots of every console page, with realistic data, into docs/console/*.png.

    make screenshots      # or: .venv/bin/python docs/console/make_screenshots.py

Starts a throwaway `dockyard serve` on a temporary data dir, gives its project external
registries and pushed images, and has Debian's chromium (driven by Playwright, as in
tests/test_console_browser.py) click through the pages at 1280x800. The secrets that show
are the throwaway server's, gone with it.

The server checks its external registries for real, so each is one whose result is the same
on every machine, with or without internet: the throwaway server itself over loopback
(available, and with a wrong password authentication_failed) and a `.internal` host that
resolves nowhere (unreachable).
"""

from __future__ import annotations

import os
import re
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

from dockyard.db import Database  # noqa: E402
from dockyard.domain.projects import create_project  # noqa: E402
from tests.oci_client import OCIClient  # noqa: E402
from tests.support import start_server  # noqa: E402

OUT = Path(__file__).resolve().parent
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def layer(seed: int, size: int) -> bytes:
    """Incompressible-looking bytes of a given size, so that the sizes shown are real."""
    return (bytes(range(256)) * (size // 256 + 1))[seed : seed + size]


def prepare(url: str, port: int, token: str, project_id: str) -> None:
    api = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=60)
    for fields in (
        {"name": "Staging registry", "registry_type": "custom", "hostname": f"localhost:{port}"},
        {
            "name": "CI cache",
            "registry_type": "custom",
            "hostname": f"localhost:{port}",
            "username": "ci-cache",
            "password": "an-expired-token",
        },
        {
            "name": "Build cache mirror",
            "registry_type": "custom",
            "hostname": "mirror.acme.internal:5000",
            "username": "ci",
            "password": "example",
        },
    ):
        api.post("/v1/container_registries", json=fields).raise_for_status()
    managed = api.get("/v1/container_registries").json()["container_registries"][0]["id"]
    created = api.post(f"/v1/container_registries/{managed}/credentials").json()
    robot = created["container_registry"]
    oci = OCIClient(
        httpx.Client(base_url=url, timeout=60),
        robot["username"],
        robot["password"],
        host=f"127.0.0.1:{port}",
    )
    base = [layer(1, 2_800_000)]
    for name, tags, extra in (
        ("shop/web", ["1.4.0", "1.4.1", "latest"], 310_000),
        ("shop/worker", ["7", "latest"], 95_000),
        ("tools/migrate", ["2026.11"], 40_000),
    ):
        for n, tag in enumerate(tags):
            layers = [*base, layer(n + len(name), extra + n * 1000)]
            oci.push_image(f"{project_id}/{name}", tag, layers=layers)
    # The console generates the credentials shown in its screenshot.
    api.delete(f"/v1/container_registries/{managed}/credentials").raise_for_status()
    deadline = time.monotonic() + 30
    while any(
        r["status"] == "verifying"
        for r in api.get("/v1/container_registries").json()["container_registries"]
    ):
        assert time.monotonic() < deadline, "the registry checks did not finish"
        time.sleep(0.2)


def shoot(page: Page, name: str) -> None:
    path = OUT / f"{name}.png"
    page.wait_for_load_state()  # a form's answer fully there, not a page in between
    page.screenshot(path=str(path))
    print(path.relative_to(ROOT))


def click_through(page: Page, token: str) -> None:
    page.goto("/")
    shoot(page, "01-sign-in")
    page.get_by_label("API token").fill("dky_not-the-right-token")
    page.get_by_role("button", name="Sign in").click()
    shoot(page, "02-sign-in-bad-token")
    page.get_by_label("API token").fill(token)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Container registries")).to_be_visible()
    shoot(page, "03-registries")

    page.get_by_role("link", name="Add external registry").click()
    page.get_by_label("Name", exact=True).fill("Quay mirror")
    page.get_by_label("Type", exact=True).select_option("custom")
    page.get_by_label("Hostname").fill("https://quay.acme.internal/v2")
    page.get_by_label("Username").fill("robot-ci")
    page.get_by_role("button", name="Add registry").click()
    shoot(page, "04-add-registry-errors")
    page.get_by_label("Hostname").fill("quay.acme.internal")
    page.get_by_label("Username").fill("")
    page.get_by_role("button", name="Add registry").click()
    # The page reloads itself while the check runs; its result is what the shot shows.
    expect(page.locator("dd .status")).not_to_have_text("verifying", timeout=20_000)
    shoot(page, "05-external-registry")
    page.get_by_role("link", name="Delete").click()
    shoot(page, "06-delete-registry")
    page.get_by_role("button", name="Delete registry").click()
    page.get_by_role("link", name="CI cache").click()
    page.get_by_role("link", name="Edit").click()
    shoot(page, "07-edit-registry")
    page.get_by_role("link", name="Registries").first.click()

    page.get_by_role("link", name=re.compile(r"Registry \(Local\)")).click()
    page.get_by_label("Expires").select_option(label="after 90 days")
    shoot(page, "08-managed-registry")
    page.get_by_role("button", name="Generate credentials").click()
    page.locator("button.copy[data-copy='login']").click()
    shoot(page, "09-credentials")
    page.get_by_role("link", name="Done").click()
    shoot(page, "17-managed-registry-credentials")
    page.get_by_role("link", name="Revoke credentials").click()
    shoot(page, "10-revoke-credentials")
    page.get_by_role("link", name="Cancel").click()
    page.get_by_role("link", name="Rotate password").click()
    shoot(page, "16-rotate-credentials")
    page.get_by_role("button", name="Rotate password").click()
    page.locator("button.copy[data-copy='password']").click()
    shoot(page, "15-rotated")
    page.get_by_role("link", name="Done").click()

    page.get_by_role("link", name="Browse repositories").click()
    shoot(page, "11-repositories")
    page.get_by_role("link", name="shop/web").click()
    shoot(page, "12-tags")
    page.get_by_role("link", name="Delete tag 1.4.0").click()
    shoot(page, "13-delete-tag")
    page.get_by_role("button", name="Delete tag").click()
    page.goto("/registries/00000000-0000-4000-8000-000000000000")
    shoot(page, "14-not-found")


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        server = start_server(
            data,
            f"sqlite:///{data / 'data' / 'dockyard.db'}",
            verify_registries="true",
            verify_timeout_seconds="5",
        )
        try:
            db = Database(f"sqlite:///{data / 'data' / 'dockyard.db'}")
            project = create_project(db, "Acme Shop")
            db.dispose()
            prepare(server.url, server.port, project.api_token, str(project.id))
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                context = browser.new_context(
                    base_url=server.url,
                    viewport={"width": 1280, "height": 800},
                    permissions=["clipboard-read", "clipboard-write"],
                )
                click_through(context.new_page(), project.api_token)
                browser.close()
        finally:
            server.stop()


if __name__ == "__main__":
    main()
