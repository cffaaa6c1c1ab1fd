"""Code and data the unit and integration tests share (importable as ``support.…``: see pyproject.toml).

helpers: event builders, the `streamproc` command runner, the exact check of a run against the oracle;
leaderboard_data, log_model: the leaderboard test log and its models; event_judge, fuzz_decoder: the
independent contract judge and the atheris harness; sockets: what listens where; fixtures/: input files.
"""
