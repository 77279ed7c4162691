"""Image references: repository of a ref, Docker's short names, picking a RepoDigest."""

from __future__ import annotations

import pytest

from composeguard.compose.images import ImageInfo, normalize_repository, repository

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


# A reference, its repository as written, and that repository as Docker names it.
REFS = [
    line.split()
    for line in f"""
    reg:5000/a/b:tag                          reg:5000/a/b                      reg:5000/a/b
    reg:5000/a/b@sha256:x                     reg:5000/a/b                      reg:5000/a/b
    reg:5000/a/b:tag@sha256:x                 reg:5000/a/b                      reg:5000/a/b
    reg:5000/a/b                              reg:5000/a/b                      reg:5000/a/b
    nginx                                     nginx                             docker.io/library/nginx
    nginx:1.25                                nginx                             docker.io/library/nginx
    nginx@{D1}                                nginx                             docker.io/library/nginx
    library/nginx:1.25-alpine                 library/nginx                     docker.io/library/nginx
    docker.io/library/nginx                   docker.io/library/nginx           docker.io/library/nginx
    linuxserver/jellyfin                      linuxserver/jellyfin              docker.io/linuxserver/jellyfin
    docker.io/linuxserver/jellyfin:10         docker.io/linuxserver/jellyfin    docker.io/linuxserver/jellyfin
    localhost:5000/app                        localhost:5000/app                localhost:5000/app
    localhost/app                             localhost/app                     localhost/app
    127.0.0.1:5000/demo/app:latest            127.0.0.1:5000/demo/app           127.0.0.1:5000/demo/app
    ghcr.io/immich-app/immich-server:v1.120 ghcr.io/immich-app/immich-server ghcr.io/immich-app/immich-server
    """.strip().splitlines()
]


@pytest.mark.parametrize(("ref", "repo", "normal"), REFS)
def test_repository(ref: str, repo: str, normal: str) -> None:
    assert repository(ref) == repo
    assert normalize_repository(repo) == normal


@pytest.mark.parametrize(
    "repo", ["docker.io/nginx", "index.docker.io/library/nginx", "index.docker.io/nginx"]
)
def test_normalize_repository_docker_hub_spellings(repo):
    assert normalize_repository(repo) == "docker.io/library/nginx"


def test_digest_for_picks_the_matching_repository():
    info = ImageInfo(
        id="sha256:abc",
        repo_digests=(
            f"local/busybox@{D1}",  # a retag keeps the source repo's digest (REFERENCE §5.3)
            f"reg:5000/shop/app@{D2}",
            f"busybox@{D3}",
        ),
        repo_tags=("reg:5000/shop/app:latest",),
    )
    assert info.digest_for("reg:5000/shop/app:latest") == f"reg:5000/shop/app@{D2}"
    assert info.digest_for("reg:5000/shop/app@" + D2) == f"reg:5000/shop/app@{D2}"
    assert info.digest_for("busybox:1.36") == f"busybox@{D3}"
    assert info.digest_for("docker.io/library/busybox") == f"busybox@{D3}"
    assert info.digest_for("local/busybox:1") == f"local/busybox@{D1}"


def test_digest_for_none_when_no_repository_matches():
    info = ImageInfo(id="sha256:abc", repo_digests=(f"reg:5000/other@{D1}",), repo_tags=())
    assert info.digest_for("reg:5000/shop/app:latest") is None
    assert info.digest_for("reg:5001/other:latest") is None  # another registry port
    assert info.digest_for("other") is None


def test_digest_for_a_local_build_without_digests():
    assert ImageInfo(id="sha256:abc", repo_digests=(), repo_tags=("app:dev",)).digest_for("app:dev") is None


def test_digest_for_docker_hub_short_name_written_with_registry():
    info = ImageInfo(id="sha256:abc", repo_digests=(f"nginx@{D1}",), repo_tags=("nginx:1.25",))
    assert info.digest_for("docker.io/nginx:1.25") == f"nginx@{D1}"
