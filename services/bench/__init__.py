"""``wsched bench``: the stated workload end to end, beside what Kafka and TiDB alone sustain.

``run`` orchestrates; ``client`` (the submitting client), ``worker`` (a no-op worker) and
``floor`` (the components alone) run as processes of their own, so that the benchmark
measures the scheduler and the API, not a shared event loop.
"""
