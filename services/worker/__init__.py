"""The worker agent and its client of the scheduler's gRPC protocol."""
