"""Boards: what users read, built from the store (data clock, leaderboards, sessions, series, rollups, change events, the streamer dimension)."""
