"""Images: references (``repository``), what a local image is (``ImageInfo``, one batched
``docker image inspect``), the VOLUMEs it declares, and tagging one."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from composeguard import execute
from composeguard.compose.docker import batched_inspect
from composeguard.dockercli import docker_binary


def repository(ref: str) -> str:
    """'reg:5000/a/b:tag@sha256:x' -> 'reg:5000/a/b' (no tag, no digest)."""
    name = ref.split("@", 1)[0]
    slash = name.rfind("/")
    colon = name.rfind(":")
    return name[:colon] if colon > slash else name


def normalize_repository(repo: str) -> str:
    """Docker's short names: 'nginx' == 'docker.io/library/nginx'."""
    parts = repo.split("/")
    if parts[0] in ("docker.io", "index.docker.io", "registry-1.docker.io"):
        parts = parts[1:]
    elif len(parts) > 1 and ("." in parts[0] or ":" in parts[0] or parts[0] == "localhost"):
        return repo  # another registry: names are taken as they are
    if len(parts) == 1:
        parts = ["library", *parts]
    return "docker.io/" + "/".join(parts)


@dataclass(frozen=True)
class ImageInfo:
    id: str
    repo_digests: tuple[str, ...]
    repo_tags: tuple[str, ...]
    created: str = ""  # when the image was built, as its config says (RFC 3339)
    labels: tuple[tuple[str, str], ...] = ()  # Config.Labels

    def digest_for(self, ref: str) -> str | None:
        """The repo digest (``repo@sha256:…``) of this image in the repository of ``ref``."""
        want = normalize_repository(repository(ref))
        for rd in self.repo_digests:
            if normalize_repository(repository(rd)) == want:
                return rd
        return None


def _image(d: dict[str, Any]) -> ImageInfo:
    labels = (d.get("Config") or {}).get("Labels") or {}
    return ImageInfo(
        id=d["Id"],
        repo_digests=tuple(d.get("RepoDigests") or ()),
        repo_tags=tuple(d.get("RepoTags") or ()),
        created=str(d.get("Created") or ""),
        labels=tuple(sorted((str(k), str(v)) for k, v in labels.items())),
    )


def image_info(ref: str) -> ImageInfo | None:
    """Inspect a local image by reference or ID; None when it is not present."""
    found = batched_inspect("image", [ref])
    return _image(found[0]) if found else None


def images_by_id(image_ids: list[str]) -> dict[str, ImageInfo]:
    """Local images by ID, in one batched inspect (those not present are left out)."""
    return {d["Id"]: _image(d) for d in batched_inspect("image", sorted(set(image_ids)))}


def image_volumes(image_ids: list[str]) -> dict[str, list[str]]:
    """The VOLUME paths each image declares (one batched inspect), by image ID."""
    return {
        d["Id"]: sorted((d.get("Config") or {}).get("Volumes") or {})
        for d in batched_inspect("image", sorted(set(image_ids)))
    }


def tag_image(image_id: str, ref: str) -> None:
    execute.run([docker_binary(), "image", "tag", image_id, ref])
