"""Developer tools that are not part of any service (`make run`'s supervisor)."""
