"""Benchmark harness for trio_chat: servers, load generator, scenarios, report."""
