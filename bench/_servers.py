"""The servers under test: Dockyard, CNCF distribution, and a bare ASGI app, on loopback."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import re
import shlex
import subprocess
import sys
import time
import uuid
from pathlib import Path

import httpx
from _load import free_port

BENCH = Path(__file__).resolve().parent
DOCKYARD_CMD = "{python} -m dockyard serve --host 127.0.0.1 --port {port} --data-dir {data_dir}"
BARE_CMDS = {
    # What `dockyard serve` runs, with the bare app of bench/_bare.py instead of Dockyard's,
    # and as many worker processes as Dockyard turned out to run.
    "granian": "{python} -m dockyard.run_granian --workers {workers} --host 127.0.0.1 "
    "--port {port} --log-level warning _bare:create_app",
    "uvicorn": "{python} -m uvicorn --factory --workers {workers} --host 127.0.0.1 "
    "--port {port} --log-level warning --no-server-header _bare:create_app",
}
DOCKYARD_CLI = [sys.executable, "-m", "dockyard"]
DIST_USER, DIST_PASSWORD = "bench", "bench-secret"


def launch(
    stack: contextlib.ExitStack, cmd: list[str], env: dict[str, str], log: Path, health: str
) -> subprocess.Popen[bytes]:
    """Start `cmd`, stop it when the stack unwinds, wait until `health` answers (any status)."""
    with log.open("wb") as handle:
        proc = subprocess.Popen(cmd, env=env, stdout=handle, stderr=subprocess.STDOUT)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    stack.callback(stop)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{cmd} exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(health, timeout=2)
            return proc
        time.sleep(0.1)
    raise RuntimeError(f"{health} did not answer within 90 s:\n{log.read_text()[-3000:]}")


def dockyard_source() -> str:
    """Which code a Dockyard started now runs: the commit, and a hash of any uncommitted
    change under dockyard/ (others may be editing it while the benchmark runs)."""
    root = BENCH.parent

    def git(*args: str) -> str:
        done = subprocess.run(["git", *args], capture_output=True, text=True, cwd=root, check=False)
        return done.stdout

    commit = git("rev-parse", "--short", "HEAD").strip() or "unknown"
    diff = git("diff", "HEAD", "--", "dockyard") + git(
        "ls-files", "--others", "--exclude-standard", "--", "dockyard"
    )
    if not diff:
        return commit
    digest = hashlib.sha256(diff.encode()).hexdigest()[:8]
    return f"{commit} + uncommitted changes in dockyard/ (diff {digest})"


def command_line(pid: int) -> str:
    """What a process runs (after `dockyard serve` exec'd into granian, that is granian)."""
    args = Path(f"/proc/{pid}/cmdline").read_bytes().rstrip(b"\0").split(b"\0")
    return shlex.join(a.decode() for a in args)


class Dockyard:
    """`dockyard serve` on a fresh data dir; a fresh project and robot for every run."""

    name = "Dockyard"
    workers = 0  # worker processes, once counted (Bench.dockyard)

    def __init__(
        self, stack: contextlib.ExitStack, work: Path, template: str, env: dict[str, str]
    ) -> None:
        self.data_dir = work / "dockyard"
        self.env = env
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        cmd = shlex.split(template.format(python=sys.executable, port=port, data_dir=self.data_dir))
        self.source = dockyard_source()
        self.proc = launch(stack, cmd, env, work / "dockyard.log", f"{self.base}/v2/")
        self.pid = self.proc.pid
        self.port = port
        challenge = httpx.get(f"{self.base}/v2/").headers.get("www-authenticate", "")
        found = re.search(r'realm="([^"]+)",service="([^"]+)"', challenge)
        if not found:
            raise RuntimeError(f"no Bearer challenge from Dockyard's /v2/: {challenge!r}")
        self.realm, self.service = found[1], found[2]
        self.auth = "token (its own /auth/token, robot credentials)"

    def project(self) -> tuple[str, str, str]:
        """A new project: (id, API token, 'robot user:password' of its managed registry)."""
        created = json.loads(
            subprocess.run(
                [
                    *DOCKYARD_CLI,
                    "projects",
                    "create",
                    "bench",
                    "--json",
                    "--data-dir",
                    str(self.data_dir),
                ],
                env=self.env,
                capture_output=True,
                check=True,
                text=True,
            ).stdout
        )
        return created["id"], created["api_token"], self.robot(created["api_token"])

    def robot(self, api_token: str) -> str:
        headers = {"Authorization": f"Bearer {api_token}"}
        with httpx.Client(base_url=self.base, headers=headers, timeout=60) as api:
            listed = api.get("/v1/container_registries").raise_for_status().json()
            managed = next(
                r for r in listed["container_registries"] if r["registry_type"] == "nodion"
            )
            path = f"/v1/container_registries/{managed['id']}/credentials"
            creds = api.post(path).raise_for_status().json()["container_registry"]
        return f"{creds['username']}:{creds['password']}"

    def place(self, count: int = 1) -> tuple[list[str], str]:
        """Repository names nobody pushed to yet (one new project), and the credentials."""
        project, _, creds = self.project()
        return [f"{project}/img{i}" for i in range(count)], creds

    def authorization(self, creds: str, repository: str) -> str:
        """A Bearer header for pull and push on one repository, from the token endpoint."""
        params = {"service": self.service, "scope": f"repository:{repository}:pull,push"}
        user, _, password = creds.partition(":")
        answer = httpx.get(self.realm, params=params, auth=(user, password), timeout=60)
        return f"Bearer {answer.raise_for_status().json()['token']}"


class Distribution:
    """CNCF distribution (`docker-registry serve`), filesystem storage, htpasswd (bcrypt)."""

    name = "distribution"

    def __init__(self, stack: contextlib.ExitStack, work: Path, env: dict[str, str]) -> None:
        root = work / "distribution"
        root.mkdir()
        htpasswd = root / "htpasswd"
        subprocess.run(
            ["htpasswd", "-Bbc", str(htpasswd), DIST_USER, DIST_PASSWORD],
            check=True,
            capture_output=True,
        )
        port = free_port()
        self.base = f"http://127.0.0.1:{port}"
        self.host = f"127.0.0.1:{port}"
        self.port = port
        config = root / "config.yml"
        config.write_text(
            f"""version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {root / "storage"}
  cache:
    blobdescriptor: inmemory
  delete:
    enabled: true
http:
  addr: 127.0.0.1:{port}
  secret: {uuid.uuid4().hex}
auth:
  htpasswd:
    realm: distribution
    path: {htpasswd}
"""
        )
        # It reads every REGISTRY_* variable as a setting (podman's REGISTRY_AUTH_FILE too).
        env = {k: v for k, v in env.items() if not k.startswith("REGISTRY_")}
        cmd = ["docker-registry", "serve", str(config)]
        self.proc = launch(stack, cmd, env, work / "distribution.log", f"{self.base}/v2/")
        self.pid = self.proc.pid
        self.auth = "htpasswd (bcrypt; its token auth needs a separate token server)"
        self.version = subprocess.run(
            ["docker-registry", "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()

    def place(self, count: int = 1) -> tuple[list[str], str]:
        prefix = f"bench/{uuid.uuid4().hex[:12]}"
        return [f"{prefix}/img{i}" for i in range(count)], f"{DIST_USER}:{DIST_PASSWORD}"

    def authorization(self, creds: str, repository: str) -> str:
        del repository
        return "Basic " + base64.b64encode(creds.encode()).decode()


def start_bare(
    stack: contextlib.ExitStack, work: Path, template: str, env: dict[str, str], workers: int = 1
) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    cmd = shlex.split(template.format(python=sys.executable, port=port, workers=workers))
    path = os.pathsep.join(p for p in (str(BENCH), env.get("PYTHONPATH", "")) if p)
    proc = launch(
        stack, cmd, {**env, "PYTHONPATH": path}, work / "bare.log", f"http://127.0.0.1:{port}/ping"
    )
    return proc, port
