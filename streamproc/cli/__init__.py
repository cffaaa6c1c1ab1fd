"""CLI: the `streamproc` command and its subcommands."""
