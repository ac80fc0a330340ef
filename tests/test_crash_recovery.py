"""A server killed (SIGKILL) at random points of a push: restarted on the same data, the
retried push completes, the image pulls back byte for byte, and `dockyard fsck` is clean.

The points are drawn from a seeded random (printed; DOCKYARD_CRASH_SEED=<seed> replays it):
the kill lands a few milliseconds after the n-th request of the push, so before, inside or
after any of its steps (token, HEAD, POST, PATCH, PUT, manifest).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import anyio
import httpx

from tests.oci_client import OCI_MANIFEST, OCIClient, encode, image_manifest, sha256
from tests.support import Server, start_server

ROUNDS = int(os.environ.get("DOCKYARD_CRASH_ROUNDS") or 6)  # more, to hunt for a bug
CHUNK = 256 * 1024


class Killer:
    """Counts the client's requests and kills the server just after the chosen one."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.count = 0
        self.target: int | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.timer: threading.Timer | None = None

    def arm(self, process: subprocess.Popen[bytes], within: int) -> str:
        self.process, self.count = process, 0
        self.target = self.rng.randint(1, within)
        self.delay = self.rng.choice([0.0, 0.001, 0.003, 0.01])
        return f"kill after request {self.target} + {self.delay * 1000:.0f} ms"

    def on_request(self, _request: httpx.Request) -> None:
        self.count += 1
        if self.count == self.target and self.process is not None:
            self.timer = threading.Timer(self.delay, self.process.send_signal, [signal.SIGKILL])
            self.timer.start()

    def disarm(self) -> bool:
        """Whether the server was killed (after the push, maybe)."""
        self.target = None
        if self.timer is None:
            return False
        self.timer.join()
        self.timer = None
        assert self.process is not None
        self.process.wait(timeout=10)
        return True


def push(
    oci: OCIClient,
    repo: str,
    tag: str,
    blobs: list[bytes],
    locations: dict[str, str],
    claims_survive: bool,
):
    """Push as a careful client does: skip blobs the registry has, resume an upload from
    where the registry says it stands (`locations` remembers them across attempts)."""
    for blob in blobs:
        if oci.head_blob(repo, sha256(blob)).status_code != 200:
            upload(oci, repo, blob, locations, claims_survive)
    config, layers = blobs[0], blobs[1:]
    content = encode(image_manifest(config, layers))
    pushed = oci.push_manifest(repo, tag, content, OCI_MANIFEST)
    assert pushed.status_code == 201, pushed.text
    return content


def upload(
    oci: OCIClient, repo: str, blob: bytes, locations: dict[str, str], claims_survive: bool
) -> None:
    digest = sha256(blob)
    offset, location = 0, locations.get(digest)
    if location is not None:
        status = oci.upload_status(location)
        end = int(status.headers.get("range", "0-0").split("-")[1])
        # "0-0" says nothing (no bytes or one): start over then, as for a lost upload.
        offset = end + 1 if status.status_code == 204 and end else 0
        location = status.headers["location"] if offset else None
    if location is None:
        started = oci.start_upload(repo)
        assert started.status_code == 202, started.text
        location = locations[digest] = started.headers["location"]
    while offset < len(blob):
        piece = blob[offset : offset + CHUNK]
        span = f"{offset}-{offset + len(piece) - 1}"
        answer = oci.patch(location, piece, content_range=span)
        if answer.status_code != 202:
            break
        location, offset = answer.headers["location"], offset + len(piece)
    else:
        answer = oci.put_upload(location, digest)
    if answer.status_code == 416 and digest in locations and claims_survive:
        # On PostgreSQL the killed server's claim on the upload outlives it (CLAIM_SECONDS,
        # as other replicas may be alive): a new upload, as docker would start, is the way
        # on. A server on SQLite lets go of every claim when it starts.
        del locations[digest]
        return upload(oci, repo, blob, locations, claims_survive)
    if answer.status_code == 404 and digest in locations:
        # Killed while finishing: the bytes became the blob, the session was left open and
        # is now BLOB_UPLOAD_UNKNOWN. Clients push the blob afresh then.
        assert answer.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN", answer.text
        del locations[digest]
        return upload(oci, repo, blob, locations, claims_survive)
    assert answer.status_code == 201, answer.text
    locations.pop(digest, None)


def requests(blobs: list[bytes], first: bool) -> int:
    """How many requests a push of `blobs` makes: a HEAD each, a POST, PATCHes and a PUT
    for each blob not yet there (only the shared one is, after the first round), the
    manifest; and the first round's token requests."""
    uploads = blobs if first else [blobs[0], *blobs[2:]]
    return len(blobs) + sum(2 + -(-len(b) // CHUNK) for b in uploads) + 1 + 2 * first


def restart(server: Server) -> None:
    assert server.process is not None
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGKILL)
    server.process.wait(timeout=10)
    server.start()


def robot_client(server: Server, killer: Killer) -> tuple[OCIClient, str]:
    token = (server.data_dir / "first-project-token").read_text().strip()
    api = httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"})
    managed = api.get("/v1/container_registries").json()["container_registries"][0]
    robot = api.post(f"/v1/container_registries/{managed['id']}/credentials").json()
    robot = robot["container_registry"]
    api.close()
    http = httpx.Client(timeout=10, event_hooks={"request": [killer.on_request]})
    oci = OCIClient(http, robot["username"], robot["password"], host=server.url[7:])
    project = json.loads(server.cli("projects", "list", "--json"))[0]["id"]
    return oci, f"{project}/crash"


def test_pushes_survive_a_server_killed_at_random_points(tmp_path: Path, database_url: str):
    seed = int(os.environ.get("DOCKYARD_CRASH_SEED") or random.SystemRandom().randrange(10**6))
    print(f"crash seed: {seed} (DOCKYARD_CRASH_SEED={seed} replays the kill points)")
    rng = random.Random(seed)
    server = start_server(tmp_path, database_url)
    claims_survive = not database_url.startswith("sqlite")  # see upload()
    killer = Killer(rng)
    try:
        oci, repo = robot_client(server, killer)
        base = rng.randbytes(CHUNK + 1000)  # shared by every round: a blob the registry has
        pushed: dict[str, tuple[bytes, list[bytes]]] = {}
        interrupted: list[str] = []
        for round_ in range(ROUNDS):
            config = f'{{"round":{round_},"os":"linux"}}'.encode()
            layers = [base, rng.randbytes(rng.randint(1, 3 * CHUNK)), rng.randbytes(700)]
            blobs, tag, locations = [config, *layers], f"r{round_}", {}
            assert server.process is not None
            plan = killer.arm(server.process, within=requests(blobs, first=not round_))
            where = f"seed {seed}, round {round_}: {plan}"
            try:
                content = push(oci, repo, tag, blobs, locations, claims_survive)
            except httpx.TransportError:
                interrupted.append(where)
                killer.disarm()
                restart(server)
                content = push(
                    oci, repo, tag, blobs, locations, claims_survive
                )  # the retry must get through
            if killer.disarm():  # killed just after the push completed
                restart(server)
            pushed[tag] = (content, blobs)
            for tag_, (manifest, images) in pushed.items():
                fetched = oci.get_manifest(repo, tag_)
                assert fetched.content == manifest, where
                for blob in images:
                    assert oci.get_blob(repo, sha256(blob)).content == blob, where
        print("\n".join(["interrupted:", *interrupted]))
        assert interrupted, f"seed {seed}: no kill landed inside a push"
        checked = subprocess.run(
            [sys.executable, "-m", "dockyard", "fsck", "--json"],
            env={**server.env, "DOCKYARD_GC_GRACE_SECONDS": "0"},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert checked.returncode == 0, f"seed {seed}: {checked.stdout}{checked.stderr}"
        distinct = {sha256(blob) for _, blobs in pushed.values() for blob in blobs}
        assert json.loads(checked.stdout)["blobs"] == len(distinct)  # every one re-hashed
    except BaseException:
        print(server.log()[-3000:])
        raise
    finally:
        server.stop()


def test_an_upload_whose_bytes_are_gone_is_unknown_and_a_new_one_works(oci, services, robot):
    """What a kill between moving an upload's bytes to its blob and closing the session
    leaves (the random kills above land there rarely): the session, without its data. Its
    PUT is BLOB_UPLOAD_UNKNOWN, every time, and a fresh upload of the blob works."""
    repo, blob = f"{robot.project_id}/app", b"finished, then the server stopped"
    started = oci.start_upload(repo)
    location = started.headers["location"]
    assert oci.patch(location, blob, content_range=f"0-{len(blob) - 1}").status_code == 202
    upload_id = location.rstrip("/").rsplit("/", 1)[1]
    store = next(iter(services.registry.stores.values()))
    anyio.run(store.delete, f"uploads/{upload_id}")

    for _ in range(2):  # the session is closed by the first answer, not left to refuse again
        gone = oci.put_upload(location, sha256(blob))
        assert gone.status_code == 404, gone.text
        assert gone.json()["errors"][0]["code"] == "BLOB_UPLOAD_UNKNOWN"
    assert oci.push_blob(repo, blob).status_code == 201
    assert oci.get_blob(repo, sha256(blob)).content == blob
