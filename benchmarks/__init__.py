"""Measured comparisons (scripts, never timed tests)."""
