"""The pipeline grain: the task states of one pipeline, its leases, and its ports."""
