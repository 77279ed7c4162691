"""A ctypes binding to libzfs_core and libnvpair: the atomic operations composeguard needs.

Only a handful of calls, loaded lazily on first use. Two traps are handled here once:

* any ``lzc_*`` call before a successful ``libzfs_core_init()`` aborts the whole process
  (a VERIFY in C), so :func:`library` refuses to hand out a handle until init succeeded;
* the ``fnvpair_value_*`` accessors abort on a type mismatch, so the errlist is read with
  the non-aborting ``nvpair_value_int32`` after checking the type.

Errors come back as :class:`ZfsError` carrying the errno and, for the batch calls, the
per-name errnos of the errlist (``{"pool/fs@snap": errno.EEXIST}``).
"""

from __future__ import annotations

import ctypes
import errno
import logging
import os
import threading
from ctypes import POINTER, byref, c_char_p, c_int, c_int32, c_uint, c_void_p
from functools import cache

from composeguard.errors import StorageError

log = logging.getLogger("composeguard.libzfs_core")

LIBZFS_CORE = "libzfs_core.so.3"
LIBNVPAIR = "libnvpair.so.3"
DATA_TYPE_INT32 = 5
NV_UNIQUE_NAME = 1
N_MORE_ERRORS = "N_MORE_ERRORS"

nvlist_p = c_void_p
nvpair_p = c_void_p


class ZfsUnavailable(StorageError):
    """libzfs_core cannot be used here (no library, no /dev/zfs, no module)."""


class ZfsError(StorageError):
    """A libzfs_core call failed. ``errors`` maps each failing name to its errno."""

    def __init__(self, call: str, err: int, errors: dict[str, int] | None = None, subject: str = "") -> None:
        self.call = call
        self.errno = err
        self.errors = dict(errors or {})
        detail = ", ".join(
            f"{n}: {errno.errorcode.get(e, e)} ({os.strerror(e)})"
            for n, e in self.errors.items()
            if n != N_MORE_ERRORS
        )
        if not detail:
            prefix = f"{subject}: " if subject else ""
            detail = f"{prefix}{errno.errorcode.get(err, err)} ({os.strerror(err)})"
        more = self.errors.get(N_MORE_ERRORS)
        super().__init__(f"{call} failed: {detail}" + (f" (and {more} more)" if more else ""))


def _sig(fn, restype, *argtypes) -> None:  # noqa: ANN001
    fn.restype = restype
    fn.argtypes = list(argtypes)


class LibZfsCore:
    """Handle to the initialised library. Get it from :func:`library`."""

    def __init__(self) -> None:
        try:
            self.nv = ctypes.CDLL(LIBNVPAIR, use_errno=True)
            self.lzc = ctypes.CDLL(LIBZFS_CORE, use_errno=True)
        except OSError as e:
            raise ZfsUnavailable(
                f"libzfs_core is not installed ({e}); install zfsutils-linux / libzfs4linux"
            ) from e
        nv, lzc = self.nv, self.lzc
        _sig(nv.nvlist_alloc, c_int, POINTER(nvlist_p), c_uint, c_int)
        _sig(nv.nvlist_free, None, nvlist_p)
        _sig(nv.nvlist_add_boolean, c_int, nvlist_p, c_char_p)
        _sig(nv.nvlist_add_string, c_int, nvlist_p, c_char_p, c_char_p)
        _sig(nv.nvlist_add_nvlist, c_int, nvlist_p, c_char_p, nvlist_p)
        _sig(nv.nvlist_next_nvpair, nvpair_p, nvlist_p, nvpair_p)
        _sig(nv.nvpair_name, c_char_p, nvpair_p)
        _sig(nv.nvpair_type, c_int, nvpair_p)
        _sig(nv.nvpair_value_int32, c_int, nvpair_p, POINTER(c_int32))
        _sig(lzc.libzfs_core_init, c_int)
        _sig(lzc.libzfs_core_fini, None)
        _sig(lzc.lzc_snapshot, c_int, nvlist_p, nvlist_p, POINTER(nvlist_p))
        _sig(lzc.lzc_destroy_snaps, c_int, nvlist_p, c_int, POINTER(nvlist_p))
        _sig(lzc.lzc_hold, c_int, nvlist_p, c_int, POINTER(nvlist_p))
        _sig(lzc.lzc_release, c_int, nvlist_p, POINTER(nvlist_p))
        _sig(lzc.lzc_exists, c_int, c_char_p)
        _sig(lzc.lzc_rollback_to, c_int, c_char_p, c_char_p)
        if not os.path.exists("/dev/zfs"):
            raise ZfsUnavailable("/dev/zfs does not exist: the ZFS kernel module is not loaded")
        rc = lzc.libzfs_core_init()
        if rc != 0:
            raise ZfsUnavailable(f"libzfs_core_init failed: cannot open /dev/zfs: {os.strerror(rc)}")

    # -- nvlists ---------------------------------------------------------------------------
    def _alloc(self) -> c_void_p:
        nvl = nvlist_p()
        rc = self.nv.nvlist_alloc(byref(nvl), NV_UNIQUE_NAME, 0)
        if rc != 0:
            raise MemoryError(f"nvlist_alloc: {os.strerror(rc)}")
        return nvl

    def _check(self, rc: int, what: str) -> None:
        if rc != 0:
            raise MemoryError(f"{what}: {os.strerror(rc)}")

    def _booleans(self, names: list[str]) -> c_void_p:
        nvl = self._alloc()
        for n in names:
            self._check(self.nv.nvlist_add_boolean(nvl, n.encode()), "nvlist_add_boolean")
        return nvl

    def _strings(self, pairs: dict[str, str]) -> c_void_p:
        nvl = self._alloc()
        for k, v in pairs.items():
            self._check(self.nv.nvlist_add_string(nvl, k.encode(), v.encode()), "nvlist_add_string")
        return nvl

    def read_errlist(self, nvl: c_void_p) -> dict[str, int]:
        out: dict[str, int] = {}
        if not nvl:
            return out
        p = self.nv.nvlist_next_nvpair(nvl, None)
        while p:
            if self.nv.nvpair_type(p) == DATA_TYPE_INT32:
                v = c_int32()
                if self.nv.nvpair_value_int32(p, byref(v)) == 0:
                    out[self.nv.nvpair_name(p).decode()] = v.value
            p = self.nv.nvlist_next_nvpair(nvl, p)
        return out

    def _batch(self, call: str, fn, nvls: list[c_void_p], *args) -> None:  # noqa: ANN001
        errs = nvlist_p()
        try:
            log.debug("%s(%s)", call, args[0] if args else "")
            rc = fn(*nvls, *args, byref(errs))
            if rc != 0:
                raise ZfsError(call, rc, self.read_errlist(errs))
        finally:
            for n in nvls:
                self.nv.nvlist_free(n)
            if errs:
                self.nv.nvlist_free(errs)

    # -- calls -----------------------------------------------------------------------------
    def snapshot(self, names: list[str], props: dict[str, str] | None = None) -> None:
        """Create all ``names`` (``pool/fs@snap``, one pool, one per dataset) in one atomic
        transaction group, with user properties ``props``."""
        if not names:
            return
        log.debug("lzc_snapshot(%s, %s)", names, sorted(props or {}))
        snaps = self._booleans(names)
        p = self._strings(props) if props else nvlist_p()
        errs = nvlist_p()
        try:
            rc = self.lzc.lzc_snapshot(snaps, p, byref(errs))
            if rc != 0:
                raise ZfsError(
                    "lzc_snapshot", rc, self.read_errlist(errs), subject=names[0] if len(names) == 1 else ""
                )
        finally:
            self.nv.nvlist_free(snaps)
            if p:
                self.nv.nvlist_free(p)
            if errs:
                self.nv.nvlist_free(errs)

    def destroy_snaps(self, names: list[str], defer: bool = False) -> None:
        """Destroy snapshots (one pool; missing ones are ignored by ZFS)."""
        if not names:
            return
        log.debug("lzc_destroy_snaps(%s, defer=%s)", names, defer)
        self._batch(
            "lzc_destroy_snaps", self.lzc.lzc_destroy_snaps, [self._booleans(names)], 1 if defer else 0
        )

    def hold(self, holds: dict[str, str]) -> None:
        """Persistent user holds ``{snapshot: tag}`` (one pool)."""
        if not holds:
            return
        log.debug("lzc_hold(%s)", holds)
        self._batch("lzc_hold", self.lzc.lzc_hold, [self._strings(holds)], -1)

    def release(self, holds: dict[str, list[str]]) -> None:
        """Release ``{snapshot: [tag, ...]}`` (one pool)."""
        if not holds:
            return
        outer = self._alloc()
        for snap, tags in holds.items():
            inner = self._booleans(tags)
            try:
                self._check(self.nv.nvlist_add_nvlist(outer, snap.encode(), inner), "nvlist_add_nvlist")
            finally:
                self.nv.nvlist_free(inner)
        log.debug("lzc_release(%s)", holds)
        self._batch("lzc_release", self.lzc.lzc_release, [outer])

    def exists(self, name: str) -> bool:
        return bool(self.lzc.lzc_exists(name.encode()))

    def rollback_to(self, fs: str, snap: str) -> None:
        log.debug("lzc_rollback_to(%s, %s)", fs, snap)
        rc = self.lzc.lzc_rollback_to(fs.encode(), snap.encode())
        if rc != 0:
            raise ZfsError("lzc_rollback_to", rc, subject=snap)


_lock = threading.Lock()


@cache
def _library() -> LibZfsCore:
    return LibZfsCore()


def library() -> LibZfsCore:
    """The initialised library (raises :class:`ZfsUnavailable`, never aborts)."""
    with _lock:
        return _library()
