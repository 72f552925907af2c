"""Speed benchmarks: scripts that print throughput ratios (never timed unit tests)."""
