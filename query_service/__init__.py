"""The read side: serves the projections and streams their changes over gRPC."""
