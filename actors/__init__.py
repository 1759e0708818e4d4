"""Virtual actors: the runtime and the pipeline grain. Imports no Kafka, gRPC, HTTP or SQL."""
