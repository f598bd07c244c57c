"""Reading a local input file with bounds: regular files only, a size cap, a read that stops at the cap.

Why: a path in the parameters is whatever the user (or a copied example) wrote. ``/dev/zero`` read with
``Path.read_bytes()`` grows until MemoryError, a FIFO blocks the open (and the read) forever, and a 2 GB log file
would be shipped into a ConfigMap that Kubernetes rejects anyway, after the cluster exists. So every input file is
checked with ``stat`` (regular file, size), opened without blocking (a FIFO that appeared between the ``stat`` and the
``open`` does not hang it), checked again on the open descriptor, and read up to the cap plus one byte.
"""

import os
import stat
from pathlib import Path

from tasks.errors import SpecError


def read_regular_file(path: str | Path, *, limit: int, field: str, fix: str) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes.

    Args:
        path: the file (``~`` is expanded; symlinks are followed, the target must be a regular file).
        limit: the most bytes accepted.
        field: the parameter that named the file (e.g. ``config.local_paths[0]``), for the error.
        fix: what to do when the file is too big (the limit's own remedy).

    Raises:
        SpecError: the file is missing, not a regular file (directory, FIFO, device, socket), unreadable or bigger
            than ``limit``; one problem naming ``field``.
    """
    file = Path(path).expanduser()

    def fail(msg: str) -> SpecError:
        return SpecError([(field, f"{str(path)!r}: {msg}")])

    try:
        st = os.stat(file)
    except OSError as exc:
        raise fail(f"cannot read it ({exc.strerror}); fix: give the path of an existing file "
                   f"(relative to {Path.cwd()})") from None
    if not stat.S_ISREG(st.st_mode):
        raise fail(f"is a {_kind(st.st_mode)}, not a regular file; fix: give a regular file")
    if st.st_size > limit:
        raise fail(f"is {st.st_size:,} bytes, over the limit of {limit:,}; fix: {fix}")
    try:
        fd = os.open(file, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0))
    except OSError as exc:
        raise fail(f"cannot open it ({exc.strerror}); fix: make it readable") from None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):  # replaced between stat and open
            raise fail("is not a regular file; fix: give a regular file")
        data = handle.read(limit + 1)
    if len(data) > limit:  # grew since the stat
        raise fail(f"is over the limit of {limit:,} bytes; fix: {fix}")
    return data


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "directory"), (stat.S_ISFIFO, "FIFO (named pipe)"),
                       (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device"),
                       (stat.S_ISSOCK, "socket")):
        if test(mode):
            return name
    return "special file"


def decode_utf8(data: bytes, *, field: str, what: str) -> str:
    """``data`` as UTF-8 text, or a SpecError naming ``field`` and the first offending byte."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError([(field, f"{what} is not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
                                 f"fix: save it as UTF-8")]) from None
