"""Sim: the simulated livestream platform that generates event logs with known truths."""
