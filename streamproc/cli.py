"""The `streamproc` command. Every setting is a flag named like its STREAMPROC_* variable."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from dataclasses import fields
from typing import Callable

from .settings import Settings


def _settings_parser() -> argparse.ArgumentParser:
    """Flags for every Settings field (``--window-ms`` for STREAMPROC_WINDOW_MS); unset flags defer to env."""
    p = argparse.ArgumentParser(add_help=False)
    g = p.add_argument_group("settings (each also read from STREAMPROC_<NAME>)")
    for f in fields(Settings):
        kind = {"int": int, "float": float}.get(f.type if isinstance(f.type, str) else f.type.__name__, str)
        g.add_argument("--" + f.name.replace("_", "-"), dest=f.name, type=kind, default=None, help=f.metadata.get("help"))
    return p


def _settings(args: argparse.Namespace) -> Settings:
    return Settings.from_env(**{f.name: getattr(args, f.name, None) for f in fields(Settings)})


def cmd_worker(args: argparse.Namespace) -> int:
    from .worker import run_worker

    settings = _settings(args)
    if not settings.kafka_bootstrap:
        from .broker import EmbeddedBroker
        from .topics import create_topics

        with EmbeddedBroker(settings.embedded_broker_port) as broker:
            settings = settings.replace(kafka_bootstrap=broker.bootstrap)
            asyncio.run(create_topics(settings))
            run_worker(settings)
        return 0
    run_worker(settings)
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    from .topics import create_topics

    print(json.dumps(asyncio.run(create_topics(_settings(args))), indent=2))
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    from .sink import open_sink

    sink = open_sink(_settings(args))
    try:
        applied = sink.apply_schema()
    finally:
        sink.close()
    print(f"applied: {', '.join(applied)}" if applied else "schema is up to date")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from .generate import build_streamers, generate, streamers_to_jsonl
    from .logfile import write_log

    start = args.start_ms if args.start_ms is not None else (int(time.time() * 1000) if args.rate else None)
    records = generate(args.events, seed=args.seed, start_ms=start, n_streamers=args.streamers)
    if args.streamers_out:
        streamers_to_jsonl(build_streamers(args.streamers, args.seed), args.streamers_out)
    if args.out:
        n = write_log(args.out, records)
        print(f"wrote {n} events to {args.out}", file=sys.stderr)
        return 0
    from .produce import publish

    settings = _settings(args)
    res = asyncio.run(publish(records, settings, rate=args.rate))
    print(f"published {res.count} events in {res.seconds:.1f}s ({res.count / max(res.seconds, 1e-9):,.0f}/s)", file=sys.stderr)
    return 0


def cmd_clickhouse_server(args: argparse.Namespace) -> int:
    from .sink.http_server import serve

    settings = _settings(args)
    serve(settings.chdb_path, host=args.host, port=args.port, user=settings.clickhouse_user,
          password=settings.clickhouse_password)
    return 0


def cmd_reconcile(args: argparse.Namespace) -> int:
    from .demo import reconcile

    summary = reconcile(_settings(args), args.log)
    print(json.dumps(summary))
    return 0 if summary["oracle_match"] else 1


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_live, run_until_done

    settings = _settings(args)
    if args.until_done or args.log:
        summary = run_until_done(settings, events=args.events, seed=args.seed, log=args.log)
        print(json.dumps(summary, ensure_ascii=False))
        return 0 if summary["oracle_match"] else 1
    run_live(settings, rate=args.rate, seed=args.seed)
    return 0


def build_parser() -> argparse.ArgumentParser:
    common = _settings_parser()
    p = argparse.ArgumentParser(prog="streamproc", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, parents=[common], help=help)
        sp.set_defaults(fn=fn)
        return sp

    add("worker", cmd_worker, "run a Faust worker (embedded broker if no bootstrap is set)")
    t = add("topics", cmd_topics, "manage topics")
    t.add_argument("action", choices=["create"])
    s = add("schema", cmd_schema, "manage the ClickHouse schema")
    s.add_argument("action", choices=["apply"])

    g = add("generate", cmd_generate, "simulate a rural livestream platform")
    g.add_argument("--events", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=1)
    g.add_argument("--streamers", type=int, default=500)
    g.add_argument("--start-ms", type=int, default=None, help="event time of the first event (default: fixed, or now with --rate)")
    g.add_argument("--out", help="write a recorded log (.jsonl, .jsonl.gz, .jsonl.zst) instead of publishing")
    g.add_argument("--streamers-out", help="also write the streamers dimension as JSON lines")
    g.add_argument("--rate", type=float, default=None, help="events/s when publishing to Kafka (default: as fast as it takes)")

    c = add("clickhouse-server", cmd_clickhouse_server,
            "serve the embedded chDB store over ClickHouse's HTTP interface (several workers, dashboards)")
    c.add_argument("--host", default="127.0.0.1")
    c.add_argument("--port", type=int, default=8123)

    r = add("reconcile", cmd_reconcile, "compare the sink with the oracle over a recorded log")
    r.add_argument("--log", required=True)

    d = add("demo", cmd_demo, "run the pipeline on embedded parts")
    d.add_argument("--events", type=int, default=100_000)
    d.add_argument("--seed", type=int, default=1)
    d.add_argument("--rate", type=float, default=2000, help="events/s in the live demo")
    d.add_argument("--until-done", action="store_true", help="feed N events, reconcile, print one JSON line, exit")
    d.add_argument("--log", help="run a recorded log instead of generated events (implies --until-done)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = (getattr(args, "log_level", None) or Settings.from_env().log_level).upper()
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
