"""Logs: recorded event logs and the tools around them (the file format, record, replay, produce, importers of public datasets, dead-letter redrive)."""
