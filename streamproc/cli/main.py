"""The `streamproc` command. Every setting is a flag named like its STREAMPROC_* variable, on the commands
that read it (`streamproc COMMAND --help`); `streamproc --help-all` lists every setting."""

from __future__ import annotations

import argparse
import asyncio
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Callable

from streamproc.cli.settings_cli import COMMAND_GROUPS, HelpAll, add_settings_flags, cmd_settings, settings_of
from streamproc.logging_setup import configure as configure_logging
from streamproc.settings import Settings


def _settings(args: argparse.Namespace) -> Settings:
    """The command's settings: its flags (``--lateness-ms``) over the environment (STREAMPROC_LATENESS_MS)."""
    return settings_of(args)


def cmd_worker(args: argparse.Namespace) -> int:
    """The worker; with no bootstrap set, on an embedded broker that lives exactly as long as it does.

    Exits 128 + the signal's number after a stop by SIGINT/SIGTERM/SIGHUP (docs/OPERATIONS.md, "Stopping"): the
    worker's last flush first, then the broker, all within ``lifecycle.FORCE_AFTER_S``."""
    from streamproc.runtime import lifecycle

    stopper = lifecycle.install()  # first: a signal during startup must stop what has started, in order
    try:
        from streamproc.runtime.worker import run_worker

        settings = _settings(args)
        if not settings.kafka_bootstrap:
            from streamproc.runtime.broker import EmbeddedBroker
            from streamproc.runtime.topics import create_topics

            with EmbeddedBroker(settings.embedded_broker_port) as broker:
                settings = settings.replace(kafka_bootstrap=broker.bootstrap)
                asyncio.run(create_topics(settings))
                status = run_worker(settings)  # the broker outlives the worker's last flush
        else:
            status = run_worker(settings)
    except lifecycle.StopSignal as stop:  # before Faust ran: what had started is stopped on the way here
        status = stop.status
    except BaseException:
        if not stopper.stopping:
            raise
        lifecycle.log.exception("failed while stopping")  # e.g. SIGHUP took the terminal, and with it stdout
        status = stopper.status
    if stopper.stopping:  # all stopped and closed: the budget is not spent on interpreter teardown
        stopper.exit_now(status)
    return status


def cmd_topics(args: argparse.Namespace) -> int:
    from streamproc.runtime.topics import create_topics

    print(json.dumps(asyncio.run(create_topics(_settings(args))), indent=2))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    if args.action == "cluster-sql":
        from streamproc.store.cluster import cluster_sql

        sql = cluster_sql(_settings(args).clickhouse_database, args.cluster)
        if args.out:
            Path(args.out).write_text(sql)
            print(f"wrote {args.out}", file=sys.stderr)
        else:
            sys.stdout.write(sql)
        return 0
    from streamproc.store import open_sink

    sink = open_sink(_settings(args))
    try:
        applied = sink.apply_schema()
    finally:
        sink.close()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from streamproc.boards.dimension import streamers_to_jsonl
    from streamproc.logs.logfile import write_log
    from streamproc.sim.generate import build_streamers, generate, streamers_for_rate

    start = args.start_ms if args.start_ms is not None else (int(time.time() * 1000) if args.rate else None)
    rooms = args.streamers or (streamers_for_rate(args.rate) if args.rate else 500)
    records = generate(args.events, seed=args.seed, start_ms=start, n_streamers=rooms)
    if args.streamers_out:
        streamers_to_jsonl(build_streamers(rooms, args.seed), args.streamers_out)
    if args.out:
        n = write_log(args.out, records)
        print(f"wrote {n} events to {args.out}", file=sys.stderr)
        return 0
    from streamproc.logs.produce import publish

    settings = _settings(args)
    res = asyncio.run(publish(records, settings, rate=args.rate))
    print(f"published {res.count} events in {res.seconds:.1f}s ({res.count / max(res.seconds, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0


def cmd_clickhouse_server(args: argparse.Namespace) -> int:
    from streamproc.store.http_server import serve

    settings = _settings(args)
    serve(settings.chdb_path, host=args.host, port=args.port, user=settings.clickhouse_user,
          password=settings.clickhouse_password, tls_cert=args.tls_cert, tls_key=args.tls_key)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from streamproc.verify.demo import reconcile

    summary = reconcile(_settings(args), args.log)
    print(json.dumps(summary))
    return 0 if summary["oracle_match"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    """The demo, live or self-checking. A stop signal stops the feed, the worker (its last flush), then
    the broker, and exits 128 + the signal's number within ``lifecycle.FORCE_AFTER_S`` (docs/OPERATIONS.md, "Stopping")."""
    from streamproc.runtime import lifecycle

    stopper = lifecycle.install()  # first: a signal during startup must stop what has started, in order
    try:
        from streamproc.verify.demo import run_live, run_until_done

        settings = _settings(args)
        if args.until_done or args.log:
            from streamproc.verify.chaos import parse_chaos

            try:
                chaos = parse_chaos(args.chaos)
            except ValueError as exc:
                print(f"streamproc demo: {exc}", file=sys.stderr)
                return 2
            summary = run_until_done(settings, events=args.events, seed=args.seed, log=args.log, chaos=chaos)
            print(json.dumps(summary, ensure_ascii=False))
            print(f"read the boards of this run: {_leaderboard_command(settings)}", file=sys.stderr)  # stdout ends in the JSON
            return 0 if summary["oracle_match"] else 1
        if args.chaos:
            print("streamproc demo: --chaos needs --until-done (the run must end in a reconcile)", file=sys.stderr)
            return 2
        run_live(settings, rate=args.rate, seed=args.seed)
        return 0
    except lifecycle.StopSignal as stop:  # every part is stopped on the way here (verify/demo.py)
        stopper.exit_now(stop.status)  # the budget is not spent on interpreter teardown
    except BaseException:
        if not stopper.stopping:
            raise
        lifecycle.log.exception("failed while stopping")  # e.g. SIGHUP took the terminal, and with it stdout
        stopper.exit_now(stopper.status)


def _leaderboard_command(settings: Settings) -> str:
    """The command that shows the boards of an `--until-done` run, which keeps its store in DATA_DIR/demo
    (a bare `streamproc leaderboard` reads DATA_DIR and would find nothing). Spelled as this command was
    started, so that it can be pasted as is."""
    program = [sys.argv[0]] if Path(sys.argv[0]).name == "streamproc" else [sys.executable, "-m", "streamproc"]
    return shlex.join([*program, "leaderboard", "--data-dir", str(Path(settings.data_dir) / "demo"), "--window", "today"])


def cmd_deadletter(args: argparse.Namespace) -> int:
    from streamproc.logs import redrive

    settings = _settings(args)
    if args.action == "export":
        records = redrive.select(redrive.load_topic(settings), args.reason)
        if args.out:
            print(f"exported {redrive.write_file(args.out, records)} dead letters to {args.out}", file=sys.stderr)
        else:
            for rec in records:
                print(json.dumps(rec, ensure_ascii=False))
        return 0
    source = redrive.load_file(args.from_file) if args.from_file else redrive.load_topic(settings)
    summary = redrive.redrive(settings, redrive.select(source, args.reason), force=args.force, dry_run=args.dry_run)
    print(json.dumps(summary, ensure_ascii=False))
    return 0 if not summary["invalid"] else 1


def _time_arg(text: str | None) -> int | None:
    from streamproc.logs.replay import parse_time

    return None if text in (None, "") else parse_time(text)


def cmd_record(args: argparse.Namespace) -> int:
    from streamproc.logs.record import RecordError, RecordOptions, record

    settings = _settings(args)
    try:
        if not settings.kafka_bootstrap:
            raise RecordError("set --kafka-bootstrap (or STREAMPROC_KAFKA_BOOTSTRAP) to the broker to record from")
        opts = RecordOptions(topics=tuple(t.strip() for t in args.topics.split(",") if t.strip()),
                             from_ms=_time_arg(args.from_time), to_ms=_time_arg(args.to_time), count=args.count,
                             follow=args.follow)
        summary = record(settings, args.out, opts, progress=args.progress,
                         progress_interval_s=args.progress_interval)
    except (RecordError, ValueError) as exc:
        print(f"record: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict()))
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    from streamproc.logs.replay import Pacing, ReplayError, Selection, replay, streamers_of, topics_of, write_selection

    try:
        sel = Selection(topics=topics_of(args.types) if args.types else None,
                        streamers=streamers_of(args.streamers) if args.streamers else None,
                        from_ms=_time_arg(args.from_time), to_ms=_time_arg(args.to_time),
                        start_at=args.start_at, strict=args.strict)
        shift = {"shift_ms": args.shift_ms, "shift_to_now": args.shift_to_now}
        if args.out:
            summary = write_selection(args.file, args.out, sel, **shift)
        else:
            settings = _settings(args)
            if not settings.kafka_bootstrap:
                raise ReplayError("set --kafka-bootstrap (or STREAMPROC_KAFKA_BOOTSTRAP) to the broker to replay to")
            pacing = Pacing(speed=args.speed if args.speed is not None else 1.0, rate=args.rate, as_fast=args.max)
            summary = replay(args.file, settings, sel, pacing, progress=args.progress,
                             progress_interval_s=args.progress_interval, **shift)
    except (ReplayError, ValueError, OSError) as exc:
        print(f"replay: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary.to_dict()))
    return 130 if summary.interrupted else 0


def cmd_import(args: argparse.Namespace) -> int:
    from streamproc.logs.importers import ImportFailed, import_file

    try:
        summary = import_file(args.format, args.input, args.out, field_map=args.map,
                              from_ms=_time_arg(args.from_time), to_ms=_time_arg(args.to_time),
                              streamers_out=args.streamers_out, rejects=args.rejects, strict=args.strict,
                              visit_idle_ms=int(args.visit_idle_s * 1000))
    except (ImportFailed, ValueError, OSError) as exc:
        print(f"import: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(summary, ensure_ascii=False))
    return 0


_EPILOG = ("Only the settings this command reads are listed; `streamproc --help-all` lists every setting, "
           "`streamproc settings` prints those in effect.")


def build_parser() -> argparse.ArgumentParser:
    from streamproc.store.cluster import CLUSTER

    p = argparse.ArgumentParser(prog="streamproc", description=__doc__)
    p.add_argument("--help-all", action=HelpAll)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        """A command with the flags of the settings groups it reads (COMMAND_GROUPS) and no others."""
        sp = sub.add_parser(name, help=help, description=help, epilog=_EPILOG)
        sp.add_argument("--help-all", action=HelpAll)
        sp.set_defaults(fn=fn)
        add_settings_flags(sp, COMMAND_GROUPS[name])
        return sp

    add("worker", cmd_worker, "run a Faust worker (embedded broker if no bootstrap is set)")
    t = add("topics", cmd_topics, "manage topics")
    t.add_argument("action", choices=["create"], help="create: create the declared topics that are missing (existing ones "
                                                         "are left alone)")
    s = add("schema", cmd_schema, "manage the ClickHouse schema")
    s.add_argument("action", choices=["apply", "cluster-sql"],
                   help="apply: run the migrations the store has not applied yet; cluster-sql: the schema for a ClickHouse "
                        "cluster (replicated, sharded), generated from the same migrations")
    s.add_argument("--out", help="cluster-sql: write the script to this file (default: standard output)")
    s.add_argument("--cluster", default=CLUSTER, help="cluster-sql: the cluster's name in remote_servers (default %(default)s)")

    g = add("generate", cmd_generate, "simulate a rural livestream platform")
    g.add_argument("--events", type=int, default=100_000, help="how many events (default %(default)s)")
    g.add_argument("--seed", type=int, default=1,
                   help="random seed: the same seed (and options) gives the same log, byte for byte (default %(default)s)")
    g.add_argument("--streamers", type=int, default=None,
                   help="rooms on the simulated platform (default 500; with --rate, as many as keep its clock at wall speed)")
    g.add_argument("--start-ms", type=int, default=None, help="event time of the first event (default: fixed, or now with --rate)")
    g.add_argument("--out", help="write a recorded log (.jsonl, .jsonl.gz, .jsonl.zst) instead of publishing")
    g.add_argument("--streamers-out", help="also write the streamers dimension as JSON lines")
    g.add_argument("--rate", type=float, default=None, help="events/s when publishing to Kafka (default: as fast as it takes)")

    c = add("clickhouse-server", cmd_clickhouse_server,
            "serve the embedded chDB store over ClickHouse's HTTP interface (several workers, dashboards)")
    c.add_argument("--host", default="127.0.0.1", help="address to listen on (default %(default)s)")
    c.add_argument("--port", type=int, default=8123, help="HTTP port (default %(default)s)")
    c.add_argument("--tls-cert", help="serve HTTPS with this certificate (PEM) ...")
    c.add_argument("--tls-key", help="... and this key")

    r = add("reconcile", cmd_reconcile, "compare the sink with the oracle over a recorded log")
    r.add_argument("--log", required=True, help="the recorded log (.jsonl, .jsonl.gz, .jsonl.zst) the store was fed from")

    d = add("demo", cmd_demo, "run the pipeline on embedded parts")
    d.add_argument("--events", type=int, default=100_000, help="with --until-done: how many events to feed (default %(default)s)")
    d.add_argument("--seed", type=int, default=1, help="random seed of the generated events (default %(default)s)")
    d.add_argument("--rate", type=float, default=2000, help="events/s in the live demo")
    d.add_argument("--until-done", action="store_true", help="feed N events, reconcile, print one JSON line, exit")
    d.add_argument("--log", help="run a recorded log instead of generated events (implies --until-done)")
    d.add_argument("--chaos", action="append", default=[], metavar="KIND=N",
                   help="with --until-done: kill-worker=K crashes and restarts the worker K times at random "
                        "points; sink-outage=S makes the sink fail for S seconds mid-run (repeatable)")

    dl = add("deadletter", cmd_deadletter, "inspect dead letters and re-drive them once fixed")
    dl.add_argument("action", choices=["export", "redrive"],
                    help="export: write dead letters as JSON lines; redrive: publish fixed ones to their original topics")
    dl.add_argument("--reason", action="append", default=[], help="only records with this reason (repeatable)")
    dl.add_argument("--out", help="export: write JSON lines here (default: standard output)")
    dl.add_argument("--from", dest="from_file", help="redrive: records from this JSON-lines file (default: the topic)")
    dl.add_argument("--force", action="store_true", help="redrive: also send records the current rules refuse")
    dl.add_argument("--dry-run", action="store_true", help="redrive: judge and count, send nothing")

    from streamproc.logs.importers import FORMATS
    from streamproc.logs.progress import MODES
    from streamproc.runtime.topics import EVENT_TOPICS

    def progress_flags(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("--progress", choices=MODES, default="auto",
                        help="bar on a terminal, periodic log lines otherwise (auto), or none")
        sp.add_argument("--progress-interval", type=float, default=10.0, help="seconds between progress log lines")

    rec = add("record", cmd_record, "capture events from Kafka into a recorded log (no consumer group)")
    rec.add_argument("--topics", default=",".join(EVENT_TOPICS), help="logical topics, comma-separated")
    rec.add_argument("--out", required=True, help="log file (.jsonl, .jsonl.gz, .jsonl.zst)")
    rec.add_argument("--from", dest="from_time", help="record timestamp >= this (epoch ms or ISO-8601)")
    rec.add_argument("--to", dest="to_time", help="record timestamp < this; in the future: keep following until then")
    rec.add_argument("--count", type=int, help="stop after this many records")
    rec.add_argument("--follow", action="store_true", help="keep consuming new records until --to, --count or Ctrl-C")
    progress_flags(rec)

    rp = add("replay", cmd_replay, "publish a recorded log to the topics, paced, filtered, re-timed")
    rp.add_argument("file", help="recorded log (.jsonl, .jsonl.gz, .jsonl.zst)")
    pace = rp.add_mutually_exclusive_group()
    pace.add_argument("--speed", type=float, help="original pacing divided by this (default 1)")
    pace.add_argument("--rate", type=float, help="events per second")
    pace.add_argument("--max", action="store_true", help="as fast as the broker takes")
    shift = rp.add_mutually_exclusive_group()
    shift.add_argument("--shift-to-now", action="store_true",
                       help="move record and event times so that the first event is now (values are rewritten)")
    shift.add_argument("--shift-ms", type=int, help="move record and event times by this many ms")
    rp.add_argument("--types", help="only these event types (view,like,order) or topics")
    rp.add_argument("--streamers", help="only these streamer ids (comma-separated, or @file)")
    rp.add_argument("--from", dest="from_time", help="record timestamp >= this (epoch ms or ISO-8601)")
    rp.add_argument("--to", dest="to_time", help="record timestamp < this")
    rp.add_argument("--start-at", type=int, default=1, help="first line of the log to send (resume)")
    rp.add_argument("--strict", action="store_true", help="a malformed log line stops the replay before it starts")
    rp.add_argument("--out", help="write the selected (and shifted) records to this log instead of publishing")
    progress_flags(rp)

    im = add("import", cmd_import, "convert a public clickstream dataset into a recorded log")
    im.add_argument("input", help="CSV or JSON lines (.gz, .zst, .zip by extension)")
    im.add_argument("--format", required=True, choices=FORMATS, help="the dataset's format")
    im.add_argument("--out", required=True, help="log file to write (.jsonl, .jsonl.gz, .jsonl.zst)")
    im.add_argument("--map", help="field-map file (TOML) for --format generic")
    im.add_argument("--from", dest="from_time", help="drop (and report) events before this time")
    im.add_argument("--to", dest="to_time", help="drop (and report) events at or after this time")
    im.add_argument("--streamers-out", help="also write the rooms as a streamers dimension (JSON lines)")
    im.add_argument("--rejects", help="write every rejected input line with its number and reason (JSON lines)")
    im.add_argument("--strict", action="store_true", help="fail on the first rejected input line")
    im.add_argument("--visit-idle-s", type=float, default=600, help="a viewer idle this long has left the room")

    from streamproc.cli.boards import add_commands as add_leaderboard_commands

    add_leaderboard_commands(add, _settings)  # leaderboard, streamers load

    se = add("settings", cmd_settings, "print the settings in effect (secrets masked), or their documentation")
    se.add_argument("--markdown", action="store_true",
                    help="print every setting as docs/SETTINGS.md (the defaults, not the values in effect)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    env = Settings.from_env()
    configure_logging(getattr(args, "log_level", None) or env.log_level, getattr(args, "log_format", None) or env.log_format)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
