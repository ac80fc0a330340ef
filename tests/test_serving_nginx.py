"""The deadlines for slow clients hold behind nginx too, with the recipe of docs/deploy.md.

The recipe is read from the document itself; only what cannot run here changes: no TLS,
this test's ports, and its 20 s timeouts scaled down to 1 s, as Dockyard's are here.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_or_skip
from tests.support import Server, free_port, start_server
from tests.test_serving import _closed_by_server

DEPLOY = Path(__file__).resolve().parent.parent / "docs" / "deploy.md"


def recipe(upstream_port: int, listen_port: int) -> str:
    text = DEPLOY.read_text()
    block = re.search(r"```nginx\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/deploy.md has no nginx recipe"
    config = block.group(1)
    config = re.sub(r"server 10\.0\.0\.\d+:5000;", "", config, count=0)
    config = config.replace(
        "upstream dockyard {", f"upstream dockyard {{\n    server 127.0.0.1:{upstream_port};", 1
    )
    config = re.sub(r"listen 443 ssl http2;", f"listen 127.0.0.1:{listen_port};", config)
    config = re.sub(r"\s*ssl_certificate(_key)?\s+[^;]+;", "", config)
    config = re.sub(r"(client_header_timeout|keepalive_timeout) \d+s;", r"\1 1s;", config)
    assert f"server 127.0.0.1:{upstream_port};" in config and "proxy_pass" in config
    return config


@pytest.fixture
def behind_nginx(tmp_path: Path) -> Iterator[tuple[Server, int]]:
    nginx = shutil.which("nginx") or (
        "/usr/sbin/nginx" if Path("/usr/sbin/nginx").exists() else None
    )
    if nginx is None:
        require_or_skip("nginx is not installed (apt-get install nginx)")
        return
    server = start_server(
        tmp_path,
        f"sqlite:///{tmp_path / 'data' / 'dockyard.db'}",
        workers="1",
        header_timeout_seconds="1",
        body_timeout_seconds="1",
        body_min_rate="100",
    )
    port = free_port()
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    user = "user root;\n" if os.geteuid() == 0 else ""
    temp = "".join(
        f"    {name}_temp_path {prefix / name};\n"
        for name in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    (prefix / "nginx.conf").write_text(
        f"{user}worker_processes 1;\npid {prefix / 'nginx.pid'};\n"
        f"error_log {prefix / 'error.log'} info;\nevents {{}}\nhttp {{\n"
        f"    access_log {prefix / 'access.log'};\n{temp}{recipe(server.port, port)}\n}}\n"
    )
    process = subprocess.Popen(
        [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert process.poll() is None, (prefix / "error.log").read_text()
            try:
                httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=1)
                break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "nginx did not answer"
                time.sleep(0.1)
        yield server, port
    finally:
        process.terminate()
        process.wait(timeout=30)
        server.stop()


def test_requests_pass_through_the_recipe(behind_nginx: tuple[Server, int]) -> None:
    _, port = behind_nginx
    answer = httpx.get(f"http://127.0.0.1:{port}/v2/")
    assert answer.status_code == 401
    assert "Bearer" in answer.headers["www-authenticate"]


def test_dribbled_headers_are_cut_off_behind_nginx(behind_nginx: tuple[Server, int]) -> None:
    _, port = behind_nginx
    with socket.create_connection(("127.0.0.1", port)) as connection:
        answered = _closed_by_server(connection, b"GET /v2/ HTTP/1.1\r\nX-Slow: ", 0.25, 40)
    assert not answered.startswith(b"HTTP/1.1 401")


def test_a_dribbled_body_is_cut_off_behind_nginx(behind_nginx: tuple[Server, int]) -> None:
    server, port = behind_nginx
    head = (
        "POST /auth/token HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(head.encode())
        answered = _closed_by_server(connection, b"a=b&", 0.25, 80)
    assert answered.startswith(b"HTTP/1.1 408"), answered
    assert "came too slowly" in server.log()
