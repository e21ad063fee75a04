"""Release engine of bluegreen: config, releases, queueing, steps, Kubernetes operations."""
