"""The stream processor: builds posts_with_counts and trending_posts, exactly once."""
