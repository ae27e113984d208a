"""Peer implementations of the processor's count aggregation, for throughput comparisons."""
