"""What deduplicating views and likes by ``event_id`` within the lateness horizon would cost.

streamproc counts a re-delivered view or like again (orders are deduplicated; unique viewers are a set).
This measures the price of doing otherwise, on the real processor, in one run, on the same records:

* CPU: events/s through ``Processor.handle_batch`` with and without an ``event_id`` lookup in front
  of every view and like (the ids of the lateness horizon kept per partition, pruned at each flush).
* memory: bytes per remembered id (tracemalloc), times the ids a horizon holds at a given rate.
* sink: exactness across crashes needs the ids restored after a restart, so every view and like
  would also become a row in ClickHouse; measured as chDB insert time per id row.

    python -m benchmarks.dedupe_cost [--events 300000]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import tracemalloc
from collections import namedtuple
from typing import Any

from streamproc.core.state import PartitionState
from streamproc.ingest.events import Order
from streamproc.runtime.processor import Processor
from streamproc.settings import Settings
from streamproc.sim.generate import generate

Rec = namedtuple("Rec", "offset key value timestamp")


class DedupingState(PartitionState):
    """PartitionState plus the rule under study: a view or like whose event_id was seen is dropped."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.seen: dict[str, int] = {}

    def apply(self, offset: int, event: Any, index: int = 0, last: bool = True) -> bool:
        if type(event) is not Order:
            seen = self.seen
            if event.event_id in seen:
                self.skip(offset, index, last)  # dropped, but the unit is applied: the checkpoint moves past it
                return True
            seen[event.event_id] = event.ts
        return super().apply(offset, event, index, last)

    def prune(self) -> None:
        """Forget ids older than the horizon: a repeat of one of them would be judged late anyway.
        Ids arrive nearly in time order, so expiry walks from the oldest and stops at the first keeper."""
        horizon = self.max_ts - self.rules.lateness_ms
        expired = []
        for k, t in self.seen.items():
            if t >= horizon:
                break
            expired.append(k)
        for k in expired:
            del self.seen[k]


def batches(n: int) -> dict[tuple[str, int], list[Rec]]:
    out: dict[tuple[str, int], list[Rec]] = {}
    for i, rec in enumerate(generate(n, seed=3)):
        part = hash(rec.key) % 4
        lst = out.setdefault((rec.topic, part), [])
        lst.append(Rec(len(lst), rec.key, rec.value, rec.ts))
    return out


def run(recs: dict[tuple[str, int], list[Rec]], state_cls: type[PartitionState], flush_every: int) -> float:
    proc = Processor(Settings.from_env(env={}), sink=None)
    for tp in recs:
        proc.states[tp] = state_cls(tp[0], tp[1], proc.rules)
    started = time.perf_counter()
    n = 0
    for (topic, part), lst in recs.items():
        st = proc.states[(topic, part)]
        for i in range(0, len(lst), 500):
            proc.handle_batch(topic, part, lst[i:i + 500])
            n += len(lst[i:i + 500])
            if i % flush_every == 0:
                proc.flush_done(proc.snapshot())
                if isinstance(st, DedupingState):
                    st.prune()
    return n / (time.perf_counter() - started)


def id_bytes(n: int = 200_000) -> float:
    tracemalloc.start()
    seen = {f"e-{i:012x}-abcdef": 1_763_900_000_000 + i for i in range(n)}
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del seen
    return size / n


def sink_cost(n: int = 200_000) -> float:
    """Seconds per id row inserted into chDB (the persistence exact restore would need)."""
    from streamproc.store.chdb import ChdbSink

    with tempfile.TemporaryDirectory() as d:
        sink = ChdbSink(d, "bench")
        sink.command("CREATE TABLE ids (src_topic LowCardinality(String), src_partition UInt16, src_offset Int64, "
                     "streamer_id String, event_id String, ts DateTime64(3)) ENGINE = MergeTree ORDER BY "
                     "(src_topic, src_partition, ts)")
        rows = [("live.views", 1, i, "s0001", f"e-{i:012x}", 1_763_900_000_000 + i) for i in range(n)]
        started = time.perf_counter()
        for i in range(0, n, 20_000):
            sink.insert("ids", ("src_topic", "src_partition", "src_offset", "streamer_id", "event_id", "ts"),
                        rows[i:i + 20_000])
        took = time.perf_counter() - started
        sink.close()
    return took / n


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--events", type=int, default=300_000)
    args = p.parse_args()
    recs = batches(args.events)
    base, dedup = [], []
    for _ in range(3):  # interleaved, best of three each: same machine state for both
        # a flush (and prune) per ~7500 records of a partition: once a second at ~90k events/s on 12 partitions
        base.append(run(recs, PartitionState, 7_500))
        dedup.append(run(recs, DedupingState, 7_500))
    per_id = id_bytes()
    per_row = sink_cost()
    horizon_ids_at_100k = 100_000 * 30  # ids a 30 s lateness horizon holds at 100k views+likes/s
    print(json.dumps({
        "events": args.events,
        "events_per_s_without": round(max(base)),
        "events_per_s_with": round(max(dedup)),
        "cpu_cost_pct": round(100 * (1 - max(dedup) / max(base)), 1),
        "bytes_per_remembered_id": round(per_id),
        "memory_mb_at_100k_per_s_30s_horizon": round(per_id * horizon_ids_at_100k / 2**20),
        "sink_us_per_id_row": round(per_row * 1e6, 2),
        "sink_s_per_s_at_100k_per_s": round(per_row * 100_000, 2),
    }))


if __name__ == "__main__":
    main()
