"""Verify: the harness that proves the pipeline exact (SQL and board oracles, the process stack, chaos faults, the self-checking demo). Runtime code never imports it."""
