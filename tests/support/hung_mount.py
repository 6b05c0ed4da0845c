"""A real FUSE mount whose server does not answer: a file system that stopped answering.

The kernel's FUSE client sends every call on a path under the mount to its server through
``/dev/fuse``; a server that reads nothing — not even the kernel's first request (``INIT``)
— leaves each call blocked in the kernel, as on an NFS or FUSE mount whose server is gone:
no thread can stop it. The server here is this class, speaking the protocol itself (the
few messages it needs), so the tests need no FUSE library or ``fusermount``; mounting takes
root (or ``CAP_SYS_ADMIN``) and ``/dev/fuse``.

* :meth:`HungMount.answer`: the mount is detached (``umount -l``) and its server answers
  the calls waiting (the mount's root is a directory): they go on, on the folder beneath,
  which every later call reaches. A removal waiting on it then removes that folder.
* :meth:`HungMount.fail`: detached, its connection closed: the calls waiting fail
  (``ENOTCONN``, "Transport endpoint is not connected"); later calls reach the folder
  beneath.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import struct
import threading
from pathlib import Path
from types import TracebackType
from typing import NoReturn

import pytest

_LIBC = ctypes.CDLL(None, use_errno=True)
_MNT_DETACH = 2
#: ``struct fuse_in_header``: length, opcode, unique, node id, uid, gid, pid, padding.
_IN = struct.Struct("=IIQQIIII")
#: ``struct fuse_out_header``: length, error (a negative errno), unique.
_OUT = struct.Struct("=IiQ")
_FORGET, _GETATTR, _INIT, _BATCH_FORGET = 2, 3, 26, 42
#: ``struct fuse_init_out`` (protocol 7.31): major, minor, max_readahead, flags,
#: max_background, congestion_threshold, max_write, time_gran, max_pages, map_alignment,
#: flags2, 7 unused.
_INIT_OUT = struct.pack("=IIIIHHIIHHI7I", 7, 31, 0, 0, 0, 0, 4096, 1, 0, 0, 0, *[0] * 7)
#: ``struct fuse_attr_out``: valid for 0 s, then ``struct fuse_attr`` of a directory
#: (ino 1, mode 040755, 2 links).
_DIRECTORY = struct.pack("=QII", 0, 0, 0) + struct.pack(
    "=QQQQQQIIIIIIIIII", 1, 0, 0, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0
)


class HungMount:
    """A FUSE mount over ``folder`` (hiding what it holds) that answers nothing until
    :meth:`answer` or :meth:`fail`; leaving the ``with`` block fails it, so no call of the
    test stays blocked. Skipped where the kernel refuses FUSE (no ``/dev/fuse``, no
    privilege); a failure under ``CI=true``."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._fd: int | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> HungMount:
        self.folder.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open("/dev/fuse", os.O_RDWR)
        except OSError as exc:
            _unavailable(f"/dev/fuse: {exc.strerror}")
        options = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
        target = str(self.folder).encode()
        if _LIBC.mount(b"nextoffer-hung", target, b"fuse.nextoffer-hung", 0, options) != 0:
            code = ctypes.get_errno()
            os.close(fd)
            _unavailable(f"mounting FUSE: {os.strerror(code)}")
        self._fd = fd
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.fail()

    def answer(self) -> None:
        """Detach the mount, and answer the calls waiting on it: they go on beneath."""
        with self._lock:
            fd, self._fd = self._fd, None  # the server's now, closed when the mount goes
            if fd is None:
                return
            _LIBC.umount2(str(self.folder).encode(), _MNT_DETACH)
        threading.Thread(target=_serve, args=(fd,), daemon=True).start()

    def fail(self) -> None:
        """Detach the mount and close its connection: the calls waiting on it fail."""
        with self._lock:
            fd, self._fd = self._fd, None
            if fd is None:
                return
            _LIBC.umount2(str(self.folder).encode(), _MNT_DETACH)
            os.close(fd)


def _serve(fd: int) -> None:
    """Answer the kernel until the connection ends (the detached mount's last user
    gone): ``INIT``, the root's attributes (a directory), nothing for ``FORGET``; anything
    else is not implemented."""
    while True:
        try:
            request = os.read(fd, (1 << 20) + 4096)
        except OSError:  # ENODEV: the mount is gone
            os.close(fd)
            return
        _, opcode, unique, *_ = _IN.unpack_from(request)
        if opcode in (_FORGET, _BATCH_FORGET):
            continue
        payload, error = b"", -errno.ENOSYS
        if opcode == _INIT:
            payload, error = _INIT_OUT, 0
        elif opcode == _GETATTR:
            payload, error = _DIRECTORY, 0
        with contextlib.suppress(OSError):
            os.write(fd, _OUT.pack(_OUT.size + len(payload), error, unique) + payload)


def _unavailable(reason: str) -> NoReturn:
    message = f"the hung-mount tests need a FUSE mount ({reason}): root and /dev/fuse"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI: {message}", pytrace=False)
    pytest.skip(message)
