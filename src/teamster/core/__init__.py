"""The pure core: state machines that turn events into instructions.

Nothing in this package performs I/O, reads clocks or the environment, or
starts threads. Time arrives as event fields; configuration arrives as
constructor arguments. A test (tests/core/test_purity.py) enforces this.
"""
