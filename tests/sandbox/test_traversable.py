"""A directory made traversable once and closed again later is opened again (the node's cache must not trust it).

Seen on a shared machine: another pytest session chmods `/tmp/pytest-of-<user>` back to 0700 (pytest does so for
its temporary root), and every later non-root pod of a running sandbox failed with "Permission denied" because
the node remembered that directory as already traversable.
"""

import os
import stat
from pathlib import Path

from sandbox.k8s.node.identity import ensure_traversable


def test_a_directory_closed_again_is_made_traversable_again(tmp_path: Path) -> None:
    outer = tmp_path / "outer"
    inner = outer / "pods" / "a" / "volumes"
    inner.mkdir(parents=True)
    os.chmod(outer, 0o700)
    done: set[Path] = set()
    ensure_traversable(inner, done=done)
    assert outer.stat().st_mode & stat.S_IXOTH
    os.chmod(outer, 0o700)  # closed again behind the node's back
    second = outer / "pods" / "b" / "volumes"
    second.mkdir(parents=True)
    ensure_traversable(second, done=done)
    assert outer.stat().st_mode & stat.S_IXOTH
