"""End to end with real clients (skopeo, podman, oras-py) against a real `dockyard serve`."""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.conftest import require_or_skip
from tests.support import Server

TIMEOUT = 60  # seconds for any one client command (a hang fails with its output)
LOGIN_REFUSED = re.compile(r"invalid username/password|unauthorized|\b401\b", re.I)
LAYER_SIZES = (64 * 1024, 1024 * 1024, 11 * 1024 * 1024)  # one layer over 10 MiB


@dataclass(frozen=True)
class Account:
    """A project, its API token and its managed registry's robot credentials."""

    project_id: str
    api_token: str
    registry_id: str
    username: str
    password: str

    @property
    def creds(self) -> str:
        return f"{self.username}:{self.password}"


def _need(*tools: str) -> None:
    for tool in tools:
        if shutil.which(tool) is None:
            require_or_skip(f"{tool} is not installed (apt-get install {tool})")


def _run(*args: str, env: dict[str, str] | None = None, check: bool = True):
    done = subprocess.run(
        args, env=env, capture_output=True, text=True, timeout=TIMEOUT, check=False
    )
    if check and done.returncode != 0:
        pytest.fail(f"{' '.join(args)} failed ({done.returncode}):\n{done.stderr}{done.stdout}")
    return done


def _account(server: Server, project_id: str, api_token: str) -> Account:
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {api_token}"})
    with api:
        managed = api.get("/v1/container_registries").json()["container_registries"][0]
        created = api.post(f"/v1/container_registries/{managed['id']}/credentials")
    assert created.status_code == 201, created.text
    body = created.json()["container_registry"]
    return Account(project_id, api_token, managed["id"], body["username"], body["password"])


@pytest.fixture
def first(server: Server) -> Account:
    """The first project, created by the server on its new data dir."""
    (project,) = json.loads(server.cli("projects", "list", "--json"))
    token = (server.data_dir / "first-project-token").read_text().strip()
    return _account(server, project["id"], token)


@pytest.fixture
def second(server: Server) -> Account:
    """A second project: a neighbour who must neither read nor write the first's images."""
    created = json.loads(server.cli("projects", "create", "Globex", "--json"))
    return _account(server, created["id"], created["api_token"])


@pytest.fixture(autouse=True)
def no_server_errors(server: Server) -> Iterator[None]:
    """Whatever a client sends, the server never answers 500 nor logs a traceback."""
    yield
    log = server.log()
    assert not re.search(r'HTTP/1\.1" 5\d\d |Traceback', log), log[-5000:]


@pytest.fixture
def work(tmp_path: Path) -> Iterator[Path]:
    """Layouts and client state; removed afterwards (the server's log stays in tmp_path)."""
    path = tmp_path / "work"
    path.mkdir()
    assert str(path) == str(path).lower(), "oci: layout paths must be lower-case for podman"
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _host(server: Server) -> str:
    return f"127.0.0.1:{server.port}"


# --- OCI image layouts -------------------------------------------------------------------


def _write_blob(layout: Path, data: bytes) -> dict[str, object]:
    digest = hashlib.sha256(data).hexdigest()
    (layout / "blobs" / "sha256" / digest).write_bytes(data)
    return {"digest": f"sha256:{digest}", "size": len(data)}


def _layer(index: int, size: int) -> bytes:
    """A tar holding one file of random bytes."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(f"layer{index}/data.bin")
        info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
        tar.addfile(info, io.BytesIO(os.urandom(size)))
    return buffer.getvalue()


def build_layout(layout: Path, tag: str = "v1") -> str:
    """An OCI image layout of random layers; returns the manifest's digest."""
    (layout / "blobs" / "sha256").mkdir(parents=True)
    layers = [
        {"mediaType": "application/vnd.oci.image.layer.v1.tar", **_write_blob(layout, data)}
        for data in (_layer(i, size) for i, size in enumerate(LAYER_SIZES))
    ]
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {},
        "rootfs": {"type": "layers", "diff_ids": [layer["digest"] for layer in layers]},
    }
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **_write_blob(layout, json.dumps(config).encode()),
        },
        "layers": layers,
    }
    described = _write_blob(layout, json.dumps(manifest).encode())
    (layout / "oci-layout").write_text('{"imageLayoutVersion": "1.0.0"}')
    index = {
        "schemaVersion": 2,
        "manifests": [
            {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                **described,
                "annotations": {"org.opencontainers.image.ref.name": tag},
            }
        ],
    }
    (layout / "index.json").write_text(json.dumps(index))
    return str(described["digest"])


def layout_manifest(layout: Path) -> tuple[str, dict[str, object]]:
    """The digest and body of the one manifest a layout's index names."""
    (entry,) = json.loads((layout / "index.json").read_text())["manifests"]
    digest = entry["digest"]
    body = (layout / "blobs" / "sha256" / digest.removeprefix("sha256:")).read_bytes()
    return digest, json.loads(body)


def blob_digests(layout: Path) -> dict[str, str]:
    """Every blob file of a layout: its name, and the sha256 of its bytes."""
    return {
        path.name: hashlib.sha256(path.read_bytes()).hexdigest()
        for path in (layout / "blobs" / "sha256").iterdir()
    }


# --- skopeo -------------------------------------------------------------------------------


def skopeo_copy(source: str, dest: str, *, src_creds: str = "", dest_creds: str = ""):
    args = ["skopeo", "copy", "--preserve-digests", "--retry-times=0"]
    if source.startswith("docker://"):
        args += ["--src-tls-verify=false"] + (["--src-creds", src_creds] if src_creds else [])
    if dest.startswith("docker://"):
        args += ["--dest-tls-verify=false"] + (["--dest-creds", dest_creds] if dest_creds else [])
    return [*args, source, dest]


def test_skopeo_pushes_and_pulls_byte_for_byte(server: Server, first: Account, work: Path):
    _need("skopeo")
    source = work / "source"
    digest = build_layout(source)
    remote = f"docker://{_host(server)}/{first.project_id}/app"

    _run(*skopeo_copy(f"oci:{source}:v1", f"{remote}:v1", dest_creds=first.creds))
    _run(*skopeo_copy(f"{remote}:v1", f"oci:{work / 'pulled'}:v1", src_creds=first.creds))

    pulled_digest, pulled_manifest = layout_manifest(work / "pulled")
    assert pulled_digest == digest
    assert pulled_manifest == layout_manifest(source)[1]
    pulled = blob_digests(work / "pulled")
    assert pulled == blob_digests(source)
    assert all(name == sha for name, sha in pulled.items())  # every byte as pushed
    big = (work / "pulled" / "blobs" / "sha256").iterdir()
    assert max(path.stat().st_size for path in big) > 10 * 1024 * 1024

    by_digest = work / "by-digest"
    _run(*skopeo_copy(f"{remote}@{digest}", f"oci:{by_digest}:pinned", src_creds=first.creds))
    assert layout_manifest(by_digest)[0] == digest
    assert blob_digests(by_digest) == pulled

    inspected = _run(
        "skopeo", "inspect", "--raw", "--tls-verify=false", "--creds", first.creds, f"{remote}:v1"
    ).stdout
    assert hashlib.sha256(inspected.encode()).hexdigest() == digest.removeprefix("sha256:")


# --- podman -------------------------------------------------------------------------------


class Podman:
    """podman with its storage, registries and credentials all in one temp dir."""

    def __init__(self, root: Path, registry: str) -> None:
        root.mkdir()
        (root / "storage.conf").write_text(
            f'[storage]\ndriver = "vfs"\nrunroot = "{root}/run"\ngraphroot = "{root}/graph"\n'
        )
        (root / "registries.conf").write_text(
            f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n'
        )
        (root / "auth.json").write_text('{"auths": {}}')
        (root / "tmp").mkdir()
        self.env = {
            **os.environ,
            "CONTAINERS_STORAGE_CONF": str(root / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(root / "registries.conf"),
            "REGISTRY_AUTH_FILE": str(root / "auth.json"),
            "TMPDIR": str(root / "tmp"),
        }
        self.registry = registry

    def __call__(self, *args: str, check: bool = True):
        return _run("podman", *args, env=self.env, check=check)

    def login(self, account: Account, password: str | None = None):
        return self(
            "login",
            self.registry,
            "--tls-verify=false",
            "-u",
            account.username,
            "-p",
            account.password if password is None else password,
            check=False,
        )

    def image_id(self, reference: str) -> str:
        return str(self("image", "inspect", "--format", "{{.Id}}", reference).stdout.strip())


@pytest.fixture
def podman(server: Server, work: Path) -> Podman:
    _need("podman")
    return Podman(work / "podman", _host(server))


def test_podman_logs_in_pushes_mounts_and_pulls(
    server: Server, first: Account, work: Path, podman: Podman
):
    refused = podman.login(first, password="not-the-password")
    assert refused.returncode != 0
    assert LOGIN_REFUSED.search(refused.stderr), refused.stderr
    assert json.loads(Path(podman.env["REGISTRY_AUTH_FILE"]).read_text())["auths"] == {}
    logged_in = podman.login(first)
    assert logged_in.returncode == 0, logged_in.stderr
    assert "Login Succeeded" in logged_in.stdout

    layout = work / "layout"
    build_layout(layout)
    podman("pull", f"oci:{layout}:v1")
    local = f"localhost{layout}:latest"
    image_id = podman.image_id(local)

    app = f"{podman.registry}/{first.project_id}/app:v1"
    copy = f"{podman.registry}/{first.project_id}/copy:v1"
    for target in (app, copy):
        podman("tag", local, target)
        podman("push", "--tls-verify=false", target)
    mounted = re.findall(
        r'"POST /v2/[^ ]*/copy/blobs/uploads/\?[^ ]*mount=sha256[^ ]* HTTP/1\.1" 201', server.log()
    )
    assert mounted, "the second push should mount the layers from the first repository"

    podman("rmi", local, app, copy)
    assert podman("image", "exists", app, check=False).returncode == 1
    for target in (app, copy):
        podman("pull", "--tls-verify=false", target)
        assert podman.image_id(target) == image_id


def test_revoked_credentials_stop_new_logins_at_once(server: Server, first: Account, podman):
    assert podman.login(first).returncode == 0
    with httpx.Client(headers={"Authorization": f"Bearer {first.api_token}"}) as api:
        revoked = api.delete(
            f"{server.url}/v1/container_registries/{first.registry_id}/credentials"
        )
    assert revoked.status_code in (200, 204), revoked.text
    refused = podman.login(first)
    assert refused.returncode != 0
    assert LOGIN_REFUSED.search(refused.stderr), refused.stderr

    # New credentials work at once; the old password stays refused.
    renewed = _account(server, first.project_id, first.api_token)
    assert podman.login(renewed).returncode == 0
    assert podman.login(renewed, password=first.password).returncode != 0


# --- oras-py ------------------------------------------------------------------------------


def test_oras_pushes_and_pulls_a_file(
    server: Server, first: Account, work: Path, monkeypatch: pytest.MonkeyPatch
):
    try:
        import oras.client
    except ImportError:
        require_or_skip("oras-py is not installed (pip install oras)")
    monkeypatch.setenv("DOCKER_CONFIG", str(work / "docker"))  # no credentials from $HOME
    monkeypatch.chdir(work)
    payload = os.urandom(3 * 1024 * 1024 + 17)
    Path("artifact.bin").write_bytes(payload)

    client = oras.client.OrasClient(hostname=_host(server), insecure=True)
    client.login(
        first.username,
        first.password,
        hostname=_host(server),
        config_path=str(work / "docker" / "config.json"),
    )
    target = f"{_host(server)}/{first.project_id}/files:v1"
    pushed = client.push(target=target, files=["artifact.bin"], quiet=True)
    assert pushed.status_code == 201, pushed.text

    pulled = client.pull(target=target, outdir=str(work / "out"))
    assert [Path(p).name for p in pulled] == ["artifact.bin"]
    assert Path(pulled[0]).read_bytes() == payload


# --- isolation between projects ----------------------------------------------------------


def test_a_robot_cannot_reach_another_projects_images(
    server: Server, first: Account, second: Account, work: Path
):
    _need("skopeo")
    source = work / "source"
    build_layout(source)
    theirs = f"docker://{_host(server)}/{first.project_id}/app"
    _run(*skopeo_copy(f"oci:{source}:v1", f"{theirs}:v1", dest_creds=first.creds))

    pull = _run(
        *skopeo_copy(f"{theirs}:v1", f"oci:{work / 'stolen'}:v1", src_creds=second.creds),
        check=False,
    )
    assert pull.returncode != 0
    assert re.search(r"unauthorized|denied|authentication required", pull.stderr, re.I), pull.stderr
    assert not (work / "stolen" / "index.json").exists()

    push = _run(
        *skopeo_copy(f"oci:{source}:v1", f"{theirs}:evil", dest_creds=second.creds), check=False
    )
    assert push.returncode != 0
    assert re.search(r"unauthorized|denied|authentication required", push.stderr, re.I), push.stderr

    # The owner still sees exactly what it pushed, and no `evil` tag.
    tags = _run("skopeo", "list-tags", "--tls-verify=false", "--creds", first.creds, theirs).stdout
    assert json.loads(tags)["Tags"] == ["v1"]
    # And the neighbour can push into its own namespace with the same layers.
    ours = f"docker://{_host(server)}/{second.project_id}/app:v1"
    _run(*skopeo_copy(f"oci:{source}:v1", ours, dest_creds=second.creds))
