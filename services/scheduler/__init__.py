"""The scheduler process: hosts the pipeline grains, their forwarders and the gRPC worker API."""
