"""Headers of a post event the processor re-keys from `posts` to `posts_by_id`, and
of a `post_comments` record (there: the `comments` record it reflects).

Defined once here: the engine writes them, and both cores read SRC_OFFSET (the
compiled one is given the name when it is built, processor/core.py), so a rename
cannot leave one side reading a header nobody writes.
"""

from __future__ import annotations

from mysocial.post_comments import SRC_OFFSET, SRC_PARTITION

# SRC_PARTITION: the record's partition in `posts` (of post_comments: in `comments`);
# SRC_OFFSET: its offset there (what the post's posts_applied_through counts).
__all__ = ["SRC_INSTANCE", "SRC_OFFSET", "SRC_PARTITION"]
SRC_INSTANCE = "src-instance"  # the processor instance that re-keyed it (for tracing)
