"""Ingest: raw Kafka messages to typed events or dead letters (decode, the streamer-id rule, packs, dead-letter records, the exported contract). No Kafka client, no I/O."""
