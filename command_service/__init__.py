"""The write side: a gRPC service that validates commands and appends events to Kafka."""
