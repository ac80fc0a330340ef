"""/v2/<name>/tags/list, /v2/_catalog and /v2/<name>/referrers: listings and their pages."""

from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from tests.oci_client import (
    OCI_EMPTY,
    OCI_INDEX,
    OCI_MANIFEST,
    OCIClient,
    assert_error,
    assert_unauthorized,
    descriptor,
    encode,
    image_manifest,
    sha256,
)

CONFIG = b'{"architecture":"amd64","os":"linux"}'
LAYER = b"layer bytes"
TAGS = ["v1.0", "latest", "V2", "1", "_x", "a-b", "a.b", "a_b", "z", "Latest"]
SBOM, SIGNATURE = "application/vnd.example.sbom.v1", "application/vnd.example.signature.v1"
LINK = re.compile(r'^<(?P<url>[^>]+)>; rel="next"$')


@pytest.fixture
def name(robot) -> str:
    return f"{robot.project_id}/app"


@pytest.fixture
def image(oci, name) -> str:
    """An image whose manifest is the subject of referrers; its digest."""
    _, digest = oci.push_image(name, "latest", layers=[LAYER], config=CONFIG)
    return digest


def tag_all(oci: OCIClient, name: str, tags: list[str]) -> None:
    content = oci.get_manifest(name, "latest").content
    for tag in tags:
        assert oci.push_manifest(name, tag, content, OCI_MANIFEST).status_code == 201


def next_link(response) -> str | None:
    link = response.headers.get("link")
    if link is None:
        return None
    match = LINK.match(link)
    assert match, link
    return match["url"]


def split_link(response) -> tuple[str, dict[str, str]]:
    """The next page's path and query parameters (each given once)."""
    url = next_link(response)
    assert url is not None, response.headers
    parts = urlsplit(url)
    query = parse_qs(parts.query, keep_blank_values=True)
    assert all(len(values) == 1 for values in query.values()), url
    return parts.path, {key: values[0] for key, values in query.items()}


# -- tags ----------------------------------------------------------------------------------


def test_tags_are_listed_in_lexical_order(oci, name, image):
    tag_all(oci, name, TAGS)
    listed = oci.tags(name)
    assert listed.status_code == 200
    assert listed.json() == {"name": name, "tags": sorted(TAGS)}
    assert "link" not in listed.headers


def test_tags_page_by_page_following_link(oci, name, image):
    tag_all(oci, name, TAGS)
    expected = sorted(TAGS)
    first = oci.tags(name, n=3)
    assert first.json()["tags"] == expected[:3]
    assert split_link(first) == (f"/v2/{name}/tags/list", {"n": "3", "last": expected[2]})
    seen, url = list(first.json()["tags"]), next_link(first)
    while url is not None:
        page = oci.request("GET", url, scope=f"repository:{name}:pull")
        assert page.status_code == 200
        assert 0 < len(page.json()["tags"]) <= 3
        seen += page.json()["tags"]
        url = next_link(page)
    assert seen == expected


def test_tags_after_last(oci, name, image):
    tag_all(oci, name, TAGS)
    expected = sorted(TAGS)
    assert oci.tags(name, last="a-b").json()["tags"] == [t for t in expected if t > "a-b"]
    assert oci.tags(name, last="a-b", n=2).json()["tags"] == [t for t in expected if t > "a-b"][:2]
    assert oci.tags(name, last="zzz").json()["tags"] == []
    assert oci.tags(name, last="0").json()["tags"] == expected  # `last` need not exist


def test_a_last_with_a_nul_byte(oci, name, image, robot):
    tag_all(oci, name, ["a", "a0", "b"])
    assert oci.tags(name, last="a\x00z").json()["tags"] == ["a0", "b", "latest"]
    assert oci.tags(name, last="\x00").json()["tags"] == ["a", "a0", "b", "latest"]
    assert oci.catalog(last=f"{robot.project_id}/\x00").json()["repositories"] == [name]


def test_n_zero_and_n_past_the_end(oci, name, image):
    tag_all(oci, name, ["b", "c"])
    zero = oci.tags(name, n=0)
    assert zero.json() == {"name": name, "tags": []}
    assert "link" not in zero.headers
    everything = oci.tags(name, n=3)
    assert everything.json()["tags"] == ["b", "c", "latest"]
    assert "link" not in everything.headers  # exactly n, and nothing after
    assert "link" not in oci.tags(name, n=100).headers


@pytest.mark.parametrize("n", ["-1", "abc", "1.5", "1e3"])
def test_a_bad_page_size_is_refused(oci, name, image, n):
    assert_error(oci.tags(name, n=n), 400, "PAGINATION_NUMBER_INVALID")
    assert_error(oci.catalog(n=n), 400, "PAGINATION_NUMBER_INVALID")


def test_the_page_size_is_capped(make_client, robot, image, name):
    capped = OCIClient(make_client(max_page_size=2), robot.username, robot.password)
    tag_all(capped, name, ["b", "c"])
    page = capped.tags(name, n=1000)
    assert page.json()["tags"] == ["b", "c"]
    assert split_link(page) == (f"/v2/{name}/tags/list", {"n": "2", "last": "c"})


def test_tags_of_an_unknown_repository(oci, robot):
    assert_error(oci.tags(f"{robot.project_id}/nowhere"), 404, "NAME_UNKNOWN")


def test_a_repository_without_tags_lists_none(oci, name, image):
    assert oci.delete_manifest(name, "latest").status_code == 202
    assert oci.tags(name).json() == {"name": name, "tags": []}


# -- the catalog ---------------------------------------------------------------------------


def test_the_catalog_shows_only_the_callers_project(oci, robot, client, other_robot):
    ours = [f"{robot.project_id}/{path}" for path in ("web", "app", "lib/base")]
    for repo in ours:
        oci.push_blob(repo, b"x")
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    theirs = f"{other_robot.project_id}/secret"
    neighbour.push_blob(theirs, b"y")

    listed = oci.catalog()
    assert listed.status_code == 200
    assert listed.json() == {"repositories": sorted(ours)}
    assert neighbour.catalog().json() == {"repositories": [theirs]}


def test_the_catalog_pages(oci, robot):
    ours = sorted(f"{robot.project_id}/r{i}" for i in range(5))
    for repo in ours:
        oci.push_blob(repo, b"x")
    first = oci.catalog(n=2)
    assert first.json()["repositories"] == ours[:2]
    assert split_link(first) == ("/v2/_catalog", {"n": "2", "last": ours[1]})
    seen, url = list(first.json()["repositories"]), next_link(first)
    while url is not None:
        page = oci.request("GET", url, scope="registry:catalog:*")
        seen += page.json()["repositories"]
        url = next_link(page)
    assert seen == ours
    assert oci.catalog(last=ours[1]).json()["repositories"] == ours[2:]


def test_an_empty_catalog(oci):
    assert oci.catalog().json() == {"repositories": []}


# -- referrers -----------------------------------------------------------------------------


def push_referrer(
    oci: OCIClient,
    name: str,
    subject: str,
    artifact_type: str | None,
    annotations: dict[str, str] | None = None,
    *,
    index: bool = False,
):
    target = oci.get_manifest(name, subject)
    assert target.status_code == 200
    subject_descriptor = {
        "mediaType": target.headers["content-type"],
        "digest": target.headers["docker-content-digest"],
        "size": len(target.content),
    }
    if index:
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [],
            "subject": subject_descriptor,
        }
    else:
        oci.push_blob(name, b"{}")
        payload = f"payload of {artifact_type} {annotations}".encode()
        oci.push_blob(name, payload)
        document = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [descriptor("application/octet-stream", payload)],
            "subject": subject_descriptor,
        }
    if artifact_type:
        document["artifactType"] = artifact_type
    if annotations:
        document["annotations"] = annotations
    content = encode(document)
    pushed = oci.push_manifest(name, sha256(content), content, document["mediaType"])
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["oci-subject"] == subject_descriptor["digest"]
    return content


def test_referrers_list_the_manifests_with_that_subject(oci, name, image):
    sbom = push_referrer(oci, name, image, SBOM, {"org.example.format": "spdx"})
    signature = push_referrer(oci, name, image, SIGNATURE)
    untyped = push_referrer(oci, name, image, None)  # the config's type stands in
    index = push_referrer(oci, name, image, None, {"kind": "index"}, index=True)
    listed = oci.referrers(name, image)
    assert listed.status_code == 200
    assert listed.headers["content-type"] == OCI_INDEX
    assert "oci-filters-applied" not in listed.headers
    body = listed.json()
    assert set(body) == {"schemaVersion", "mediaType", "manifests"}
    assert (body["schemaVersion"], body["mediaType"]) == (2, OCI_INDEX)
    expected = [
        {
            **descriptor(OCI_MANIFEST, sbom),
            "artifactType": SBOM,
            "annotations": {"org.example.format": "spdx"},
        },
        {**descriptor(OCI_MANIFEST, signature), "artifactType": SIGNATURE},
        {**descriptor(OCI_MANIFEST, untyped), "artifactType": OCI_EMPTY},
        {**descriptor(OCI_INDEX, index), "annotations": {"kind": "index"}},
    ]
    assert sorted(body["manifests"], key=lambda d: d["digest"]) == sorted(
        expected, key=lambda d: d["digest"]
    )


def test_referrers_filtered_by_artifact_type(oci, name, image):
    sbom = push_referrer(oci, name, image, SBOM)
    push_referrer(oci, name, image, SIGNATURE)
    filtered = oci.referrers(name, image, artifact_type=SBOM)
    assert filtered.status_code == 200
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    expected = [{**descriptor(OCI_MANIFEST, sbom), "artifactType": SBOM}]
    assert filtered.json()["manifests"] == expected
    none = oci.referrers(name, image, artifact_type="application/vnd.example.none")
    assert none.headers["oci-filters-applied"] == "artifactType"
    assert none.json()["manifests"] == []


@pytest.mark.parametrize("wanted", ["application/x\x00y", "a" * 300, "no-slash"])
def test_referrers_filtered_by_what_no_artifact_type_can_be(oci, name, image, wanted):
    push_referrer(oci, name, image, SBOM)
    filtered = oci.referrers(name, image, artifact_type=wanted)
    assert filtered.status_code == 200
    assert filtered.headers["oci-filters-applied"] == "artifactType"
    assert filtered.json()["manifests"] == []


def test_referrers_of_an_unknown_digest_or_repository_are_empty(oci, name, image, robot):
    for repo, digest in [(name, sha256(b"nothing")), (f"{robot.project_id}/nowhere", image)]:
        listed = oci.referrers(repo, digest)
        assert listed.status_code == 200
        assert listed.json() == {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}


def test_referrers_stay_in_their_repository(oci, name, image, robot):
    push_referrer(oci, name, image, SBOM)
    sibling = f"{robot.project_id}/sibling"
    oci.push_image(sibling, "latest", layers=[LAYER], config=CONFIG)  # the same image digest
    assert oci.referrers(sibling, image).json()["manifests"] == []


def test_a_deleted_referrer_is_no_longer_listed(oci, name, image):
    sbom = push_referrer(oci, name, image, SBOM)
    keep = push_referrer(oci, name, image, SIGNATURE)
    assert oci.delete_manifest(name, sha256(sbom)).status_code == 202
    listed = oci.referrers(name, image).json()["manifests"]
    assert [d["digest"] for d in listed] == [sha256(keep)]


def test_a_referrer_pushed_before_its_subject(oci, name, robot):
    for blob in (CONFIG, LAYER):
        oci.push_blob(name, blob)
    subject = encode(image_manifest(CONFIG, [LAYER], annotations={"later": "yes"}))
    oci.push_blob(name, b"{}")
    early = encode(
        {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": SBOM,
            "config": descriptor(OCI_EMPTY, b"{}"),
            "layers": [],
            "subject": descriptor(OCI_MANIFEST, subject),
        }
    )
    pushed = oci.push_manifest(name, "sbom", early, OCI_MANIFEST)
    assert pushed.status_code == 201, pushed.text
    assert pushed.headers["oci-subject"] == sha256(subject)
    assert oci.push_manifest(name, "v1", subject, OCI_MANIFEST).status_code == 201
    listed = oci.referrers(name, sha256(subject)).json()["manifests"]
    assert [d["digest"] for d in listed] == [sha256(early)]


def test_another_project_cannot_list_referrers_here(oci, name, image, client, other_robot):
    push_referrer(oci, name, image, SBOM)
    neighbour = OCIClient(client, other_robot.username, other_robot.password)
    assert_unauthorized(neighbour.referrers(name, image), "insufficient_scope")
