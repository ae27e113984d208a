"""The projections the processor maintains, one module each (see processor/projection.py).

- posts_by_id:       posts (keyed by author) re-keyed by post id, so a post and its
                     likes and comments share partition p;
- posts_with_counts: the per-post counts (the per-event rules of processor/core.py);
- trending_posts:    per-partition trending candidates and their global merge.
"""
