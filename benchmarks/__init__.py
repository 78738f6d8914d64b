"""Throughput and memory benchmarks, with peers measured side by side in the same run."""
