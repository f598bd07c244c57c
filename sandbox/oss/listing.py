"""Prefix/delimiter listing over a bucket's sorted key list (ListObjects v1 and v2 share it).

Each page costs O(log n + page size): bisect to the start, then walk. When a key rolls up into a
common prefix, the walk jumps past every key under that prefix with one more bisect. A 5,000-key
"directory" of a 100,000-key bucket is one step, not 5,000.

`after` is exclusive. A common prefix equal to `after` is skipped. That is how a page that ended on
a common prefix (NextMarker / continuation token = "dir/") resumes without repeating it.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field


@dataclass
class Page:
    keys: list[str] = field(default_factory=list)
    prefixes: list[str] = field(default_factory=list)
    truncated: bool = False
    last: str = ""  # last key or common prefix returned: the resume point for the next page


def _successor(prefix: str) -> str | None:
    """The smallest string greater than every string starting with `prefix` (None: no such string)."""
    last = ord(prefix[-1])
    if last >= 0x10FFFF:
        return None
    return prefix[:-1] + chr(last + 1)


def list_page(sorted_keys: list[str], *, prefix: str = "", delimiter: str = "", after: str = "",
              max_items: int = 100) -> Page:
    page = Page()
    n = len(sorted_keys)
    i = bisect.bisect_right(sorted_keys, after) if after else 0
    if prefix:
        i = max(i, bisect.bisect_left(sorted_keys, prefix))
    count = 0
    while i < n:
        key = sorted_keys[i]
        if not key.startswith(prefix):
            break
        if delimiter:
            j = key.find(delimiter, len(prefix))
            if j >= 0:
                common = key[: j + len(delimiter)]
                if common != after:
                    if count >= max_items:
                        page.truncated = True
                        break
                    page.prefixes.append(common)
                    page.last = common
                    count += 1
                succ = _successor(common)
                if succ is None:
                    i += 1
                    while i < n and sorted_keys[i].startswith(common):
                        i += 1
                else:
                    i = bisect.bisect_left(sorted_keys, succ, i + 1)
                continue
        if count >= max_items:
            page.truncated = True
            break
        page.keys.append(key)
        page.last = key
        count += 1
        i += 1
    return page
