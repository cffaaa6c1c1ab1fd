"""Core: event-time windows and the per-partition state that tallies them. Pure Python: no Kafka, no store, no I/O (docs/ARCHITECTURE.md, "Data path")."""
