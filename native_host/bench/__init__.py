"""Measuring code for scripts/bench (and the load stress test): sync, key sync, many hosts at once."""
