"""Invariant checkers for simulated and real clusters."""
