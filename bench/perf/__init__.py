"""Registered performance benchmarks (`fexbench perf NAME`); each prints its figures."""
