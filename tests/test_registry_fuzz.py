"""/v2 parsers fuzzed: names, references, digests, Content-Range, Range and manifests.

The pure parsers get many examples, checked against oracles written here independently
(fullmatch, so a trailing newline can't slip through); the HTTP app gets fewer, and each
refusal must be a 4xx with the right OCI code that leaves the repository, its tags and the
catalog as they were. Runs are derandomized and keep no example database.
"""

from __future__ import annotations

import json
import re
import tempfile
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from hypothesis.configuration import set_hypothesis_home_dir

from dockyard.domain.manifest_format import MAX_REFERENCES, parse_manifest
from dockyard.registry.blobs import _malformed_range
from dockyard.registry.errors import RegistryError
from dockyard.registry.grammar import parse_digest, parse_name, parse_reference
from tests.oci_client import (
    OCI_INDEX,
    OCI_MANIFEST,
    OCIClient,
    assert_error,
    encode,
    image_manifest,
    sha256,
)

# Hypothesis caches constants it reads from the source under ./.hypothesis, at collection
# and even with database=None: kept out of the work tree, in the system's temp directory.
set_hypothesis_home_dir(Path(tempfile.gettempdir()) / "dockyard-hypothesis")
PURE = settings(max_examples=600, derandomize=True, database=None, deadline=None)
HTTP = settings(
    max_examples=40,
    derandomize=True,
    database=None,
    deadline=None,
    # The registry set up by the fixtures is shared by every example on purpose: each one
    # must leave it as it was.
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- oracles: what the OCI distribution spec and the image spec allow ------------------------

COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
TAG = r"[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}"
HEX = {"sha256": 64, "sha512": 128}
MEDIA_TYPE = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
ANY_DIGEST = r"[a-z0-9]+(?:[+._-][a-z0-9]+)*:[a-zA-Z0-9=_-]+"


def valid_name(name: str) -> bool:
    head, sep, _ = name.partition("/")
    try:
        canonical = str(uuid.UUID(head)) == head
    except ValueError:
        canonical = False
    return (
        len(name) <= 255
        and bool(sep)
        and canonical
        and re.fullmatch(rf"{COMPONENT}(?:/{COMPONENT})*", name) is not None
    )


def valid_digest(value: str) -> bool:
    algorithm, _, encoded = value.partition(":")
    return algorithm in HEX and re.fullmatch(rf"[a-f0-9]{{{HEX[algorithm]}}}", encoded) is not None


def valid_tag(value: str) -> bool:
    return re.fullmatch(TAG, value) is not None


# -- strategies ------------------------------------------------------------------------------

PROJECT = "0f8fad5b-d9cb-469f-a165-70867728950e"
# Built rather than drawn from COMPONENT with from_regex, which is several times slower.
components = st.builds(
    lambda words, seps: words[0] + "".join(s + w for s, w in zip(seps, words[1:], strict=False)),
    st.lists(st.text("ab09", min_size=1, max_size=5), min_size=1, max_size=4),
    st.lists(st.sampled_from([".", "_", "__", "-", "---"]), min_size=3, max_size=3),
)
good_names = st.builds(
    lambda parts: "/".join([PROJECT, *parts]), st.lists(components, min_size=1, max_size=4)
)
hexes = st.sampled_from(sorted(HEX)).flatmap(
    lambda a: st.text("0123456789abcdef", min_size=HEX[a], max_size=HEX[a]).map(
        lambda h: f"{a}:{h}"
    )
)
good_tags = st.from_regex(TAG, fullmatch=True)
# Characters that break grammars: separators, case, newlines, NUL, non-ASCII look-alikes.
NASTY = "\n\r\t\x00 /:.-_+=@%?#AZaz09\u0130\u212a\u00b2\u0663\ufeff\ud800\U0001f600"


@st.composite
def mutated(draw: st.DrawFn, base: st.SearchStrategy[str]) -> str:
    """A valid value with one small change: where grammars are most often wrong."""
    value = draw(base)
    where = draw(st.integers(0, len(value)))
    how = draw(st.sampled_from(["insert", "delete", "replace", "append", "upper", "repeat"]))
    char = draw(st.sampled_from(NASTY) | st.characters())
    if how == "insert":
        return value[:where] + char + value[where:]
    if how == "delete":
        return value[:where] + value[where + 1 :]
    if how == "replace":
        return value[:where] + char + value[where + 1 :]
    if how == "append":
        return value + char
    if how == "upper":
        return value.upper()
    return value * draw(st.integers(2, 5))


def strings(good: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    return st.one_of(good, mutated(good), st.text(max_size=300), st.text(NASTY, max_size=40))


# -- names, references, digests --------------------------------------------------------------


def refused_with(exc: RegistryError, code: str) -> None:
    assert exc.code == code, exc
    assert exc.status == 400, exc
    body = json.loads(exc.response().body)
    assert body["errors"][0]["code"] == code


@PURE
@given(strings(good_names))
def test_parse_name_accepts_exactly_the_grammar(name):
    try:
        parsed = parse_name(name)
    except RegistryError as exc:
        refused_with(exc, "NAME_INVALID")
        assert not valid_name(name), name
    else:
        assert valid_name(name), name
        assert parsed.full == name
        assert str(parsed.project_id) == name.partition("/")[0]


@PURE
@given(strings(hexes))
def test_parse_digest_accepts_exactly_sha256_and_sha512(value):
    try:
        assert parse_digest(value) == value
    except RegistryError as exc:
        refused_with(exc, "DIGEST_INVALID")
        assert not valid_digest(value), value
    else:
        assert valid_digest(value), value


@PURE
@given(strings(good_tags | hexes))
def test_parse_reference_takes_a_tag_or_a_digest(reference):
    try:
        assert parse_reference(reference) == reference
    except RegistryError as exc:
        refused_with(exc, "DIGEST_INVALID" if ":" in reference else "TAG_INVALID")
        assert not (valid_tag(reference) or valid_digest(reference)), reference
    else:
        assert valid_tag(reference) or valid_digest(reference), reference


ranges = st.one_of(
    st.from_regex(r"bytes=\s*\d{0,25}-\d{0,25}(\s*,\s*\d{0,25}-\d{0,25}){0,3}\s*", fullmatch=True),
    mutated(st.from_regex(r"bytes=\d{0,5}-\d{0,5}", fullmatch=True)),
    st.text(max_size=60),
)


@PURE
@given(ranges)
def test_any_range_header_is_judged_without_an_error(value):
    assert _malformed_range(value) in (True, False)


def test_a_range_of_thousands_of_digits_is_ignored_not_an_error():
    # int() refuses more than 4300 digits: this was a 500.
    assert _malformed_range("bytes=" + "9" * 5000 + "-" + "1" * 5000) is True


# -- manifests -------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(NASTY, max_size=20)
    | st.sampled_from([OCI_MANIFEST, OCI_INDEX, sha256(b"x"), 2]),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=20,
)
KEYS = [
    "schemaVersion",
    "mediaType",
    "config",
    "layers",
    "manifests",
    "blobs",
    "subject",
    "artifactType",
    "annotations",
    "size",
    "digest",
]


def base_document(config: bytes = b"{}", layers=(b"layer",)) -> dict:
    return image_manifest(config, list(layers))


@st.composite
def broken_manifests(draw: st.DrawFn) -> bytes:
    """A real manifest, broken in one of the ways a client, a proxy or an attacker would."""
    document = base_document(layers=draw(st.lists(st.binary(max_size=4), max_size=3)))
    how = draw(
        st.sampled_from(
            [
                "truncate",
                "replace",
                "size",
                "media type",
                "nest",
                "duplicate",
                "utf-8",
                "number",
                "constant",
                "encoding",
                "whole",
            ]
        )
    )
    content = encode(document)
    if how == "truncate":
        return content[: draw(st.integers(0, len(content) - 1))]
    if how == "replace":
        path = draw(
            st.sampled_from(
                [[k] for k in KEYS]
                + [["config", k] for k in KEYS]
                + [["layers", 0, k] for k in KEYS]
            )
        )
        target = document
        for step in path[:-1]:
            if isinstance(target, list) and not target:
                break
            target = target[step]
        else:
            target[path[-1]] = draw(json_values)
        return encode(document)
    if how == "size":
        document["config"]["size"] = draw(
            st.sampled_from([-1, 2**63, 2**64, 10**40, 1.5, 1e300, "1", True, None])
        )
        return encode(document)
    if how == "media type":
        document["mediaType"] = draw(
            st.sampled_from([f"{OCI_MANIFEST}\n", "application/json ", "a/b/c", "", "x" * 300])
            | st.text(NASTY, max_size=30)
        )
        return encode(document)
    if how == "nest":
        depth = draw(st.integers(50, 50_000))
        return content[:-1] + b',"annotations":' + b"[" * depth + b"]" * depth + b"}"
    if how == "duplicate":
        key = draw(st.sampled_from(["layers", "config", "mediaType", "schemaVersion"]))
        return content[:-1] + f',"{key}":{json.dumps(document[key])}}}'.encode()
    if how == "utf-8":
        where = draw(st.integers(1, len(content) - 1))
        return (
            content[:where]
            + draw(st.sampled_from([b"\xff", b"\xc3", b"\xed\xa0\x80"]))
            + content[where:]
        )
    if how == "number":
        number = draw(st.sampled_from([b"1" + b"0" * 5000, b"1e999", b"-0", b"2.0", b"1E2"]))
        return content.replace(b'"schemaVersion":2', b'"schemaVersion":' + number)
    if how == "constant":
        return content.replace(
            b'"schemaVersion":2',
            b'"schemaVersion":' + draw(st.sampled_from([b"NaN", b"Infinity", b"-Infinity"])),
        )
    if how == "encoding":
        return json.dumps(document).encode(draw(st.sampled_from(["utf-16", "utf-32", "utf-8-sig"])))
    return json.dumps(draw(json_values)).encode()


content_types = (
    st.none()
    | st.sampled_from([OCI_MANIFEST, OCI_INDEX, "application/json"])
    | st.text(max_size=40)
)


@PURE
@given(broken_manifests() | st.binary(max_size=200), content_types)
def test_parse_manifest_accepts_only_what_every_client_reads_alike(content, content_type):
    try:
        parsed = parse_manifest(content, content_type)
    except RegistryError as exc:
        refused_with(exc, "MANIFEST_INVALID")
        return
    document = json.loads(content.decode("utf-8"), object_pairs_hook=_unique_keys)
    assert isinstance(document, dict)
    assert parsed.digest == sha256(content)
    assert re.fullmatch(MEDIA_TYPE, parsed.media_type), parsed.media_type
    if parsed.artifact_type is not None:
        assert re.fullmatch(MEDIA_TYPE, parsed.artifact_type), parsed.artifact_type
    for descriptor in (*parsed.blobs, *parsed.manifests, parsed.subject):
        if descriptor is not None:
            assert re.fullmatch(ANY_DIGEST, descriptor.digest), descriptor
            assert 0 <= descriptor.size < 2**63, descriptor


def _unique_keys(pairs):
    keys = [key for key, _ in pairs]
    assert len(keys) == len(set(keys)), keys
    return dict(pairs)


def test_more_references_than_allowed_is_manifest_invalid():
    document = base_document()
    document["layers"] = [document["layers"][0]] * (MAX_REFERENCES + 1)
    with pytest.raises(RegistryError) as refused:
        parse_manifest(encode(document), OCI_MANIFEST)
    refused_with(refused.value, "MANIFEST_INVALID")


# -- through the HTTP app --------------------------------------------------------------------

CONFIG, LAYER = b"{}", b"layer"
# What an HTTP client can put in a header: printable ASCII.
ASCII = st.characters(min_codepoint=0x20, max_codepoint=0x7E)


class World:
    """The robot's repository with one tagged image, and a token for everything on it."""

    def __init__(self, client, robot):
        self.client = client
        self.name = f"{robot.project_id}/app"
        oci = OCIClient(client, robot.username, robot.password)
        self.content, self.digest = oci.push_image(self.name, "v1", [LAYER], config=CONFIG)
        self.token = oci.token(f"repository:{self.name}:pull,push,delete", "registry:catalog:*")
        self.before = self.snapshot()

    def send(self, method: str, path: str, **kwargs):
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        response = self.client.request(
            method, f"http://testserver{path}", headers=headers, **kwargs
        )
        assert response.status_code < 500, response.text
        return response

    def snapshot(self) -> tuple:
        catalog = self.send("GET", "/v2/_catalog").json()
        tags = self.send("GET", f"/v2/{self.name}/tags/list").json()
        pulled = self.send("GET", f"/v2/{self.name}/manifests/v1")
        return catalog, tags, pulled.content

    def assert_unchanged(self) -> None:
        assert self.snapshot() == self.before


@pytest.fixture
def world(client, robot) -> World:
    return World(client, robot)


def oci_refusal(response, *codes: str) -> str:
    """The response is a 4xx OCI error whose first code is one of `codes`."""
    assert 400 <= response.status_code < 500, response.text
    body = response.json()
    assert isinstance(body["errors"][0], dict), (response.request.url, body)
    code = body["errors"][0]["code"]
    assert code in codes, (response.request.url, body)
    return code


def path_of(value: str) -> str:
    return quote(value.encode("utf-8", "surrogatepass"), safe="")


@HTTP
@given(name=strings(good_names))
def test_http_names_are_refused_before_anything_is_stored(world, name):
    assume("\ud800" not in name)
    response = world.send(
        "PUT",
        f"/v2/{quote(name, safe='/')}/manifests/v2",
        content=world.content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    if valid_name(name):
        # Someone else's repository, or a path of this one's token doesn't cover.
        oci_refusal(response, "UNAUTHORIZED", "NAME_UNKNOWN")
    else:
        code = oci_refusal(response, "NAME_INVALID", "UNSUPPORTED", "UNAUTHORIZED")
        if code == "NAME_INVALID":
            assert response.status_code == 400
    world.assert_unchanged()


@HTTP
@given(reference=strings(good_tags | hexes))
def test_http_references_that_are_no_tag_nor_digest_store_nothing(world, reference):
    assume(not (valid_tag(reference) or valid_digest(reference)))
    assume("\ud800" not in reference)
    assume(reference not in (".", ".."))  # the client resolves those before sending
    put = world.send(
        "PUT",
        f"/v2/{world.name}/manifests/{path_of(reference)}",
        content=world.content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    oci_refusal(put, "TAG_INVALID", "DIGEST_INVALID", "UNSUPPORTED")
    got = world.send("GET", f"/v2/{world.name}/manifests/{path_of(reference)}")
    oci_refusal(got, "MANIFEST_UNKNOWN", "DIGEST_INVALID", "UNSUPPORTED")
    world.assert_unchanged()


@HTTP
@given(
    content_range=st.one_of(
        st.from_regex(r"(bytes )?[0-9]{0,30}-[0-9]{0,30}(/([0-9]{0,30}|\*))?", fullmatch=True),
        st.text(ASCII, max_size=40),
    ),
    body=st.binary(max_size=8),
)
def test_http_content_range_is_a_chunk_or_a_range_refusal(world, content_range, body):
    started = world.send("POST", f"/v2/{world.name}/blobs/uploads/")
    assert started.status_code == 202, started.text
    location = started.headers["location"]
    try:
        patched = world.send(
            "PATCH",
            location,
            content=body,
            headers={"Content-Range": content_range, "Content-Type": "application/octet-stream"},
        )
        status = world.send("GET", location)
        assert status.status_code == 204
        if patched.status_code == 202:
            assert patched.headers["range"] == f"0-{max(len(body) - 1, 0)}"
            assert status.headers["range"] == patched.headers["range"]
        else:
            oci_refusal(patched, "RANGE_INVALID", "SIZE_INVALID")
            assert status.headers["range"] == "0-0"  # nothing was appended
    finally:
        assert world.send("DELETE", location).status_code == 204
    world.assert_unchanged()


http_ranges = st.one_of(
    st.from_regex(
        r"bytes= ?[0-9]{0,25}-[0-9]{0,25}( ?, ?[0-9]{0,25}-[0-9]{0,25}){0,3} ?", fullmatch=True
    ),
    st.from_regex(r"bytes=[0-9]{0,2}-[0-9]{0,2}", fullmatch=True).flatmap(
        lambda v: st.integers(0, len(v)).flatmap(
            lambda i: st.text(ASCII, min_size=1, max_size=2).map(lambda c: v[:i] + c + v[i:])
        )
    ),
    st.text(ASCII, max_size=40),
)


@HTTP
@given(value=http_ranges)
def test_http_range_is_served_ignored_or_range_invalid(world, value):
    blob = world.send("GET", f"/v2/{world.name}/blobs/{sha256(LAYER)}", headers={"Range": value})
    if blob.status_code == 200:
        assert blob.content == LAYER
    elif blob.status_code == 206:
        multipart = blob.headers["content-type"].startswith("multipart/byteranges")
        assert multipart or (blob.content and blob.content in LAYER), blob.headers
    else:
        oci_refusal(blob, "RANGE_INVALID")
        assert blob.status_code == 416


@HTTP
@given(content=broken_manifests(), content_type=content_types)
def test_http_broken_manifests_are_refused_and_store_nothing(world, content, content_type):
    assume(content_type is None or (content_type.isprintable() and content_type.isascii()))
    headers = {"Content-Type": content_type} if content_type else {}
    put = world.send("PUT", f"/v2/{world.name}/manifests/fuzz", content=content, headers=headers)
    if put.status_code == 201:  # a change that left it a valid manifest of present blobs
        assert world.send("GET", f"/v2/{world.name}/manifests/fuzz").content == content
        world.before = world.snapshot()
        return
    oci_refusal(put, "MANIFEST_INVALID", "MANIFEST_BLOB_UNKNOWN")
    world.assert_unchanged()


# -- regressions found by the fuzzing above ---------------------------------------------------


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("{name}/manifests/latest%0A", "TAG_INVALID"),
        ("{name}/manifests/{digest}%0A", "DIGEST_INVALID"),
        ("{name}/manifests/lat%0Aest", "TAG_INVALID"),
        ("{name}%0A/manifests/latest", "NAME_INVALID"),
        ("{name}%0Aa/manifests/latest", "NAME_INVALID"),
        ("{name}/manifests/latest%0D", "TAG_INVALID"),
        ("{name}/manifests/latest%00", "TAG_INVALID"),
    ],
)
def test_a_control_character_in_a_path_is_the_right_oci_error(world, path, code):
    # Starlette's `path` convertor is ".*", which stops at a line break: without the
    # registry's routes matching across lines, these fell through to a 404 of /v1's shape.
    path = "/v2/" + path.format(name=world.name, digest=world.digest)
    put = world.send("PUT", path, content=world.content, headers={"Content-Type": OCI_MANIFEST})
    assert oci_refusal(put, code) == code
    assert put.status_code == 400
    world.assert_unchanged()


def test_a_media_type_with_a_line_break_is_manifest_invalid(world):
    document = json.loads(world.content)
    document["mediaType"] = OCI_MANIFEST + "\n"
    put = world.send("PUT", f"/v2/{world.name}/manifests/v2", content=encode(document))
    assert_error(put, 400, "MANIFEST_INVALID")
    world.assert_unchanged()


def test_a_manifest_of_unknown_blobs_creates_no_repository(world, robot):
    fresh = f"{robot.project_id}/fresh"
    oci_token = world.token
    world.token = OCIClient(world.client, robot.username, robot.password).token(
        f"repository:{fresh}:pull,push", "registry:catalog:*"
    )
    put = world.send(
        "PUT",
        f"/v2/{fresh}/manifests/v1",
        content=world.content,
        headers={"Content-Type": OCI_MANIFEST},
    )
    error = assert_error(put, 400, "MANIFEST_BLOB_UNKNOWN")
    assert error["detail"]["digest"] in (sha256(CONFIG), sha256(LAYER))
    assert fresh not in world.send("GET", "/v2/_catalog").json()["repositories"]
    world.token = oci_token
    world.assert_unchanged()


@pytest.mark.parametrize(
    "content",
    [
        b'{"schemaVersion": 2, "schemaVersion": 2, "mediaType": "%s", "manifests": []}',
        b'{"schemaVersion": NaN, "mediaType": "%s", "manifests": []}',
        b'\xef\xbb\xbf{"schemaVersion": 2, "mediaType": "%s", "manifests": []}',
    ],
    ids=["duplicate key", "NaN", "byte order mark"],
)
def test_json_that_parsers_read_differently_is_manifest_invalid(world, content):
    content = content.replace(b"%s", OCI_INDEX.encode())
    put = world.send(
        "PUT",
        f"/v2/{world.name}/manifests/v2",
        content=content,
        headers={"Content-Type": OCI_INDEX},
    )
    assert_error(put, 400, "MANIFEST_INVALID")
    world.assert_unchanged()
