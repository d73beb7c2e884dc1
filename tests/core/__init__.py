"""Tier 1 and 2 tests: the pure core (exact instruction lists, properties)."""
