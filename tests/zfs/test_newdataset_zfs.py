"""provision's dataset making and unmaking on real OpenZFS (inside the guest, no Docker):
created at exactly the folder's path with its record size and tag, taken away again only when
the tag is this provision's, and the empty mount point ZFS leaves behind removed."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from composeguard.errors import StorageError
from composeguard.storage.mounts import read_mounts
from composeguard.storage.newdataset import ZFS_TAG, create, created_by, destroy, new_name
from composeguard.storage.zfs import ZfsBackend
from tests.zfs.guest import GUEST_ONLY, get, zfs

pytestmark = GUEST_ONLY


@pytest.mark.parametrize("rel", ["db", "stacks/arr/sonarr"], ids=["in-the-dataset", "deeper-down"])
def test_create_at_the_path_then_destroy(datasets, rel: str) -> None:
    parent_name = datasets("appdata")
    parent = ZfsBackend(read_mounts()).dataset_for(get(parent_name, "mountpoint"))
    path = os.path.join(parent.files_at, rel)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    name, own_mountpoint = new_name(parent, path)
    assert own_mountpoint == ("/" in rel)

    create(parent, path, name, {"recordsize": "8K"}, "txn-1")

    assert os.path.ismount(path) and get(name, "mountpoint") == path
    assert get(name, "recordsize") == "8192" and get(name, ZFS_TAG) == "txn-1"
    assert created_by(parent, path, name, "txn-1") and not created_by(parent, path, name, "txn-2")
    Path(path, "PG_VERSION").write_text("16\n")
    with pytest.raises(StorageError, match="not the dataset this provision"):
        destroy(parent, path, name, "txn-2")  # another provision's id: left alone
    assert os.path.ismount(path)

    destroy(parent, path, name, "txn-1")

    assert not os.path.lexists(path), "the empty mount point is gone too"
    assert name not in zfs("list", "-H", "-o", "name", "-r", parent_name)


def test_a_dataset_without_the_tag_is_never_destroyed(datasets) -> None:
    parent_name = datasets("appdata")
    child = datasets("appdata/media")  # the user's own child dataset at appdata/media
    parent = ZfsBackend(read_mounts()).dataset_for(get(parent_name, "mountpoint"))
    path = get(child, "mountpoint")

    assert not created_by(parent, path, child, "txn-1")
    with pytest.raises(StorageError):
        destroy(parent, path, child, "txn-1")
    assert os.path.ismount(path)
