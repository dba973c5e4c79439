"""Servers for the peer benchmarks. Each runs inside its peer's own virtualenv, not ours."""
