"""The per-event path in one process, without Kafka: the worker's processor against the Python limit.

End-to-end figures (``benchmarks/run.py``) mix the broker, the client, Faust and the sink into every
number, and the machine is shared, so a change to decode or state shows up there as noise. Here the
same seeded corpus is cut into per-partition batches (murmur2 partitioning, as a producer would) and
fed, in one process and one run, through

* ``processor``: ``runtime.processor.Processor.handle_batch`` as the worker runs it (``core.batch.apply_batch``:
  decode, validation, PartitionState, dead letters, metrics), with a snapshot + flush_done every
  ``--flush-every`` events (100,000: the worker's one-second flush at 100k events/s; at the goal rates a
  flush covers more events, so this overstates the flush's share);
* ``reference``: the same processor with the per-event path swapped in (``core.batch.apply_batch_reference``,
  the oracle of the tests: ``events.decode`` + ``PartitionState.apply`` per unit), i.e. "before"; and
* ``limit``: ``benchmarks.baselines.aggregator``, the "Python limit" (orjson + a dict of window tallies),

each unpacked and in packs (``logs.packs.pack_records``). Ratios quoted are from the same run, interleaved,
so machine load moves all sides alike; the medians of ``--runs`` runs are printed at the end. Rates are
given by wall time and by the process's CPU time (``time.process_time``): on a shared machine the CPU
figures are the steadier ones, as time spent waiting for a core does not count.

    .venv/bin/python -m benchmarks.inner_loop [--events 1000000] [--runs 3] [--unfrozen] [--gc default]
    .venv/bin/python -m benchmarks.inner_loop --profile reference|processor|limit [--packs 1]
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import json
import pstats
import statistics
import sys
import time
from collections import namedtuple
from typing import Any, Sequence

from aiokafka.partitioner import murmur2

from benchmarks.baselines import aggregator
from benchmarks.corpus import corpus_log, load, spread
from streamproc.core.batch import apply_batch_reference
from streamproc.core.state import PartitionState
from streamproc.logs.logfile import LogRecord
from streamproc.logs.packs import pack_records
from streamproc.runtime.heap import GC_THRESHOLD
from streamproc.runtime.processor import Processor
from streamproc.runtime.topics import partitions_of
from streamproc.settings import Settings

Rec = namedtuple("Rec", "offset key value timestamp")  # what the processor reads of an aiokafka record
Batch = tuple[str, int, list]  # (logical topic, partition, records)


def batches(records: Sequence[LogRecord], size: int) -> list[Batch]:
    """Records per partition with consecutive offsets, cut into batches of ``size``, dealt round robin
    over the partitions (a consumer's fetches interleave them too)."""
    parts: dict[tuple[str, int], list[Rec]] = {}
    n_parts: dict[str, int] = {}
    for rec in records:
        n = n_parts.get(rec.topic)
        if n is None:
            n = n_parts[rec.topic] = partitions_of(rec.topic)
        tp = (rec.topic, (murmur2(rec.key or b"") & 0x7FFFFFFF) % n)
        lst = parts.setdefault(tp, [])
        lst.append(Rec(len(lst), rec.key, rec.value, rec.ts))
    cut = {tp: [lst[i:i + size] for i in range(0, len(lst), size)] for tp, lst in parts.items()}
    out: list[Batch] = []
    for i in range(max(len(c) for c in cut.values())):
        out.extend((tp[0], tp[1], c[i]) for tp, c in sorted(cut.items()) if i < len(c))
    return out


Timing = tuple[float, float]  # (wall seconds, CPU seconds of this process)


def run_processor(work: list[Batch], flush_every: int, reference: bool = False) -> tuple[Timing, Processor]:
    """Time for the processor to take every batch (snapshots included); the processor, to inspect."""
    proc = Processor(Settings.from_env(env={}), sink=None)
    if reference:
        proc.apply_batch = apply_batch_reference
    for topic, part, _ in work:
        if (topic, part) not in proc.states:
            proc.states[(topic, part)] = PartitionState(topic, part, proc.rules)
    handle = proc.handle_batch
    # events per batch (lines of packs), so that packed and unpacked runs flush equally often
    sizes = [sum(r.value.count(b"\n") + 1 if r.value else 1 for r in recs) for _, _, recs in work]
    gc.collect()
    started, cpu0 = time.perf_counter(), time.process_time()
    since = 0
    for (topic, part, recs), size in zip(work, sizes):
        handle(topic, part, recs)
        since += size
        if since >= flush_every:
            since = 0
            proc.take_dead_letters()
            proc.flush_done(proc.snapshot())
    return (time.perf_counter() - started, time.process_time() - cpu0), proc


def run_limit(work: list[Batch], events: int) -> Timing:
    handle = aggregator(10_000)
    gc.collect()
    started, cpu0 = time.perf_counter(), time.process_time()
    n = 0
    for _, _, recs in work:
        n += handle(recs)
    took = (time.perf_counter() - started, time.process_time() - cpu0)
    assert n == events, (n, events)
    return took


def measure(work: list[Batch], n: int, pack: int, flush_every: int) -> dict[str, Any]:
    """One interleaved run: limit, reference and processor on the same batches, with the ratios."""
    limit = run_limit(work, n)
    ref, ref_proc = run_processor(work, flush_every, reference=True)
    fast, proc = run_processor(work, flush_every)
    assert proc.counts == ref_proc.counts and proc.counts["consumed"] == n, (proc.counts, ref_proc.counts, n)
    out: dict[str, Any] = {"pack": pack}
    for clock, i in (("wall", 0), ("cpu", 1)):
        out[clock] = {"limit_eps": n / limit[i], "reference_eps": n / ref[i], "processor_eps": n / fast[i],
                      "reference_ratio": limit[i] / ref[i], "ratio": limit[i] / fast[i]}
    out["counts"] = proc.counts
    return out


def profile(records: list[LogRecord], pack: int, batch: int, flush_every: int, which: str, top: int) -> None:
    work = batches(list(pack_records(records, pack)) if pack > 1 else records, batch)
    prof = cProfile.Profile()
    prof.enable()
    if which in ("processor", "reference"):
        run_processor(work, flush_every, reference=which == "reference")
    else:
        run_limit(work, len(records))
    prof.disable()
    stats = pstats.Stats(prof, stream=sys.stderr)
    stats.sort_stats("tottime").print_stats(top)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.inner_loop", description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=1_000_000)
    p.add_argument("--streamers", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--spread", type=int, help="deal the events out to this many streamers (benchmarks.corpus.spread), "
                                              "as the streamers section of make bench does")
    p.add_argument("--runs", type=int, default=3)
    p.add_argument("--batch", type=int, default=1_000, help="records per fetched batch of one partition")
    p.add_argument("--flush-every", type=int, default=100_000, help="events between snapshots")
    p.add_argument("--packs", default="1,10", help="pack sizes to run, comma separated (1: unpacked)")
    p.add_argument("--profile", choices=("processor", "reference", "limit"), help="cProfile one run instead (stderr)")
    p.add_argument("--unfrozen", action="store_true",
                   help="leave the corpus to the garbage collector (by default it is frozen: see below)")
    p.add_argument("--gc", choices=("worker", "default"), default="worker",
                   help="the collector as the worker sets it (runtime.heap.GC_THRESHOLD, for every side of the "
                        "comparison) or Python's default thresholds")
    p.add_argument("--top", type=int, default=30)
    a = p.parse_args(argv)
    records = load(corpus_log(a.events, a.streamers, a.seed))
    if a.spread:
        records = spread(records, a.spread)
    packs = [int(x) for x in a.packs.split(",")]
    if a.profile:
        for pack in packs:
            print(f"--- {a.profile}, packs of {pack}", file=sys.stderr)
            profile(records, pack, a.batch, a.flush_every, a.profile, a.top)
        return 0
    works = {pack: batches(list(pack_records(records, pack)) if pack > 1 else records, a.batch) for pack in packs}
    n = len(records)
    del records
    gc.collect()
    if not a.unfrozen:
        # The corpus is the harness's, not the worker's: frozen, no collection walks it. Then the state's
        # own growth decides when full collections run (the worker adds its framework's objects, which
        # makes them rarer): the conservative choice. --unfrozen leaves a million records in the oldest
        # generation, which makes full collections vanish: the generous one.
        gc.freeze()
    if a.gc == "worker":
        gc.set_threshold(*GC_THRESHOLD)
    runs: dict[int, list[dict[str, Any]]] = {pack: [] for pack in packs}
    for i in range(a.runs):
        for pack in packs:
            r = measure(works[pack], n, pack, a.flush_every)
            runs[pack].append(r)
            print(json.dumps({"run": i, **_rounded(r)}), flush=True)
    summary: dict[str, Any] = {"events": a.events, "streamers": a.streamers, "seed": a.seed, "batch": a.batch,
                               "gc": {"mode": a.gc, "threshold": gc.get_threshold()}}
    for clock in ("wall", "cpu"):
        out = summary[clock] = {}
        for pack, rs in runs.items():
            row = out[f"pack{pack}"] = {name: statistics.median(r[clock][name] for r in rs) for name in rs[0][clock]}
            if pack != 1 and 1 in runs:
                # packs against the unpacked limit (the goal for packs of 10), each run with its own pair
                for name in ("processor", "reference"):
                    row[f"{name}_vs_unpacked_limit"] = statistics.median(
                        rp[clock][f"{name}_eps"] / r1[clock]["limit_eps"] for rp, r1 in zip(rs, runs[1]))
    print(json.dumps({"summary": _rounded(summary)}, indent=1))
    return 0


def _rounded(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _rounded(v) for k, v in obj.items()}
    if isinstance(obj, float):
        return round(obj, 3) if obj < 100 else round(obj)
    return obj


if __name__ == "__main__":
    sys.exit(main())
