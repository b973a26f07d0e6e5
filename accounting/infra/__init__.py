"""Process plumbing the coordinator's layers share: Prometheus metrics, trace context,
supervised background tasks and the clock.

May import ``core`` only (the metrics name its outcomes); never the store or anything above it.
"""
