"""Map a service's volumes to host paths, and host paths to datasets/subvolumes."""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from composeguard.compose.project import Project, Service, VolumeMount
from composeguard.storage.base import Backend, Dataset, Unprotected
from composeguard.storage.mounts import Mount, mount_for, read_mounts

IGNORED_TYPES = {"tmpfs", "npipe", "image", "cluster"}
# The host's own configuration, bound into containers so they agree with the host (the time
# zone, name resolution, CA certificates, the kernel's modules): never an app's data, even when
# bound read-write, and so neither snapshotted nor "shared" by the projects that bind it.
HOST_CONFIG = (
    "/etc/localtime",
    "/etc/timezone",
    "/usr/share/zoneinfo",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/etc/machine-id",
    "/var/lib/dbus/machine-id",
    "/etc/os-release",
    "/usr/lib/os-release",
    "/etc/passwd",
    "/etc/group",
    "/etc/ssl/certs",
    "/etc/ca-certificates",
    "/usr/share/ca-certificates",
    "/etc/pki",
    "/lib/modules",
    "/usr/lib/modules",
    "/proc",
    "/sys",
    "/dev",
)


def is_host_config(path: str) -> bool:
    """``path`` (as written, or where its links lead) is one of the host's own configuration
    files or below one of its configuration folders (``HOST_CONFIG``)."""
    for p in {os.path.normpath(path), os.path.realpath(path)}:
        if any(p == h or p.startswith(h + "/") for h in HOST_CONFIG):
            return True
    return False


def volume_path(info: dict) -> tuple[str | None, str | None]:
    """Where a volume's data really is, from its ``docker volume inspect``: the bind device of
    a local volume made with ``-o o=bind -o device=…`` (an ``external: true`` volume often is),
    else its ``Mountpoint`` (``…/volumes/<name>/_data`` in Docker's data-root)."""
    if (info.get("Driver") or "local") != "local":
        return None, f"the volume {info.get('Name')} uses the {info.get('Driver')} driver, not local"
    opts = info.get("Options") or {}
    if opts.get("device") and "bind" in str(opts.get("o", "")).split(","):
        return str(opts["device"]), None
    if opts.get("type") not in (None, "", "none"):
        return None, f"the volume {info.get('Name')} is a {opts.get('type')} mount"
    return str(info.get("Mountpoint")), None


@dataclass(frozen=True)
class Protected:
    target: str  # the path inside the container
    path: str  # the host path
    dataset: Dataset


@dataclass(frozen=True)
class NotProtected:
    target: str
    path: str | None
    reason: str


@dataclass
class ServiceStorage:
    service: str
    protected: list[Protected] = field(default_factory=list)
    unprotected: list[NotProtected] = field(default_factory=list)

    @property
    def datasets(self) -> list[Dataset]:
        seen: dict[str, Dataset] = {}
        for p in self.protected:
            seen.setdefault(p.dataset.name, p.dataset)
        return list(seen.values())


class StorageMapper:
    """Finds the dataset behind each volume. Backends are created on first use."""

    def __init__(self, project: Project, mounts: list[Mount] | None = None) -> None:
        self.project = project
        self.mounts = mounts if mounts is not None else read_mounts()
        self._backends: dict[str, Backend] = {}

    def backend(self, kind: str) -> Backend:
        if kind not in self._backends:
            if kind == "btrfs":
                from composeguard.storage.btrfs import BtrfsBackend

                self._backends[kind] = BtrfsBackend(self.mounts, self.project.settings.btrfs_snapshot_dir)
            elif kind == "zfs":
                from composeguard.storage.zfs import ZfsBackend

                self._backends[kind] = ZfsBackend(self.mounts)
            else:
                raise KeyError(kind)
        return self._backends[kind]

    def host_path(self, v: VolumeMount) -> tuple[str | None, str | None]:
        """(host path, reason it is skipped or unprotected). Path None + reason None: ignore."""
        if v.type in IGNORED_TYPES:
            return None, None
        if v.type == "bind":
            return v.source, None
        if v.type != "volume" or not v.source:
            return None, None  # anonymous: found from the running container (for_service)
        spec = self.project.volumes.get(v.source) or {}
        driver = spec.get("driver") or "local"
        if driver != "local":
            return None, f"named volume {v.source} uses the {driver} driver, not local"
        opts = spec.get("driver_opts") or {}
        if opts.get("device") and "bind" in str(opts.get("o", "")).split(","):
            return str(opts["device"]), None
        if opts.get("type") not in (None, "none"):
            return None, f"named volume {v.source} is a {opts.get('type')} mount"
        from composeguard.compose.reads import volume_inspect

        info = volume_inspect(spec.get("name") or v.source)
        if info is None:
            return None, None  # not created yet: there is no data to protect
        return volume_path(info)

    def dataset_for_path(self, path: str) -> Dataset | None:
        """The dataset holding ``path``; None for a socket, device or FIFO (not data: e.g.
        /var/run/docker.sock bind-mounted into Traefik or Portainer)."""
        if is_host_config(path):
            return None  # the host's time zone, resolv.conf …: the host's, not the app's
        if not os.path.exists(path):
            raise Unprotected(f"{path} does not exist")
        mode = os.stat(path).st_mode
        if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
            return None
        real = os.path.realpath(path)
        if real == "/":
            raise Unprotected("a bind mount of / cannot be snapshotted")
        m = mount_for(real, self.mounts)
        fstype = m.fstype if m else "unknown"
        if fstype == "btrfs":
            return self.backend("btrfs").dataset_for(real)
        if fstype == "zfs":
            return self.backend("zfs").dataset_for(real)
        raise Unprotected(f"{path} is on {fstype}, not on ZFS or Btrfs")

    def for_service(
        self, service: Service, mounts: Iterable[tuple[str, str, str, str]] = ()
    ) -> ServiceStorage:
        """Where the service's data lives: its declared volumes, plus the volumes its running
        container has that the compose file does not name (``mounts``: (type, name, source,
        destination) from ``docker inspect``): anonymous volumes and the ``VOLUME``s an image
        declares (postgres, mysql, mariadb, mongo). Compose keeps those across a recreate, so
        they are data like any other."""
        out = ServiceStorage(service.name)
        known: set[str] = set()
        for v in service.volumes:
            if v.read_only:  # read, not written: not data an upgrade can damage (see read_paths)
                known.add(v.target)
                continue
            path, reason = self.host_path(v)
            if reason:
                out.unprotected.append(NotProtected(v.target, path, reason))
                known.add(v.target)
                continue
            if path is None:
                if v.type in IGNORED_TYPES or v.read_only or (v.type == "volume" and v.source):
                    known.add(v.target)
                continue
            known.add(v.target)
            self._add(out, v.target, path)
        for kind, name, source, dest in mounts:
            if kind != "volume" or dest in known or not source:
                continue
            known.add(dest)
            self._add(out, dest, source, f"the anonymous volume {name[:12]} at {dest}")
        return out

    def read_paths(self, service: Service) -> list[str]:
        """The real host paths the service mounts read-only (binds and local named volumes):
        a reader of the rollback unit's data is stopped with it (unit.neighbours)."""
        out = []
        for v in service.volumes:
            if not v.read_only:
                continue
            path, _ = self.host_path(v)
            if path and not is_host_config(path):
                out.append(os.path.realpath(path))
        return out

    def _add(self, out: ServiceStorage, target: str, path: str, what: str = "") -> None:
        try:
            ds = self.dataset_for_path(path)
            if ds is not None:
                out.protected.append(Protected(target, path, ds))
        except Unprotected as e:
            out.unprotected.append(NotProtected(target, path, f"{what}: {e}" if what else str(e)))


Backends = Callable[[str], Backend]  # backend kind ("btrfs", "zfs") -> its backend


def backends_for(project: Project) -> Backends:
    """The storage backends of one run (the mount table is read once for all of them)."""
    return StorageMapper(project, read_mounts()).backend
