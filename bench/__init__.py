"""Benchmarks: figures come from here, never from timed unit tests."""
