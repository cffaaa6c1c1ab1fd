"""The contract of ``streamproc.runtime.faust_compat`` with the pinned faust-streaming and aiokafka.

Every private name the project uses lives in that module; this test checks that each one exists on the
installed versions and that the batch fetch loop behaves as the worker relies on: whole batches per
partition, in order; nothing before a seek's read offset delivered again; no further fetch while a
batch waits to be taken (backpressure); nothing delivered while the flow is paused. It drives the real
``BatchConsumer`` with the fetch itself (``_wait_next_records``) fed by the test, so a Faust upgrade
that changes those names or that loop's surroundings fails here, not in production.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
import aiokafka
import faust
import pytest
from aiohttp import web
from faust.types import TP
from support.helpers import Rec

from streamproc.runtime import faust_compat
from streamproc.runtime.faust_compat import PINNED, PRIVATE_NAMES, App, Batch, BatchConsumer, add_middleware

A, B = TP("live.likes", 0), TP("live.likes", 1)


def test_the_installed_versions_are_the_pinned_ones() -> None:
    # an upgrade must come with a look at runtime/faust_compat.py: this is where it is asked for
    assert (faust.__version__, aiokafka.__version__) == (PINNED["faust"], PINNED["aiokafka"])


@pytest.fixture
def app() -> App:
    return App("compat-test", broker="kafka://127.0.0.1:1", store="memory://")


def test_every_private_name_exists_where_it_is_used(app: App) -> None:
    consumer = app.consumer
    assert isinstance(consumer, BatchConsumer)
    for owner, names in PRIVATE_NAMES.items():
        subject = consumer if isinstance(consumer, owner) else app
        assert isinstance(subject, owner)
        missing = [n for n in names if not hasattr(subject, n)]
        assert not missing, (owner, missing)
    middlewares = app.web.web_app.middlewares
    add_middleware(app, "a middleware")
    assert list(middlewares)[-1] == "a middleware"


def test_the_names_bound_batches_replaces_exist() -> None:
    modules = faust_compat.record_modules()
    assert any("_crecords" in m.__name__ for m in modules)  # the compiled record modules, which aiokafka runs
    for module in modules:
        # the old formats (magic 0 and 1) have no zstd
        wanted = [n for n in faust_compat.CODEC_NAMES if n != "zstd_decode" or "legacy" not in module.__name__]
        assert all(callable(getattr(module, n, None)) for n in wanted), module.__name__
    for owner, names in faust_compat.FETCHER_PRIVATE_NAMES.items():
        assert all(hasattr(owner, n) for n in names), owner


def test_the_consumer_faust_builds_waits_on_a_fetch_as_long_as_the_worker_says() -> None:
    async def built(wait_ms: int | None) -> Any:
        app = App("compat-test", broker="kafka://127.0.0.1:1", store="memory://")
        app.fetch_max_wait_ms = wait_ms
        thread = app.consumer._new_consumer_thread()
        assert isinstance(thread, faust_compat.FetchWaitThread)
        return thread._create_worker_consumer(app.transport)  # as the thread does when it starts

    assert getattr(asyncio.run(built(100)), faust_compat.FETCH_WAIT_ATTRIBUTE) == 100
    assert getattr(asyncio.run(built(None)), faust_compat.FETCH_WAIT_ATTRIBUTE) == 1500  # Faust's own, untouched


class _Fetcher:
    """The fetch side of the loop: hands out ``fetches`` one per call, then stops the loop."""

    def __init__(self, fetches: list[dict]) -> None:
        self._stopped = asyncio.Event()
        self.fetches = fetches
        self.asked = 0

    async def next_records(self, timeout: float) -> tuple[dict, None]:
        self.asked += 1
        if not self.fetches:
            self._stopped.set()
            return {}, None
        return self.fetches.pop(0), None


def _drain(consumer: Any, fetcher: _Fetcher, deliver: Any) -> Any:
    """The real drain loop of ``consumer``, fed by ``fetcher``, delivering to ``deliver``."""
    consumer.deliver = deliver
    consumer._wait_next_records = fetcher.next_records
    return consumer._drain_messages(fetcher)


def _records(first: int, n: int) -> list[Rec]:
    return [Rec(o, b"k", b"v%d" % o, 0) for o in range(first, first + n)]


def test_batches_arrive_whole_in_order_and_after_a_seek_nothing_is_delivered_twice(app: App) -> None:
    consumer: Any = app.consumer
    got: list[Batch] = []
    fetcher = _Fetcher([{A: _records(0, 3), B: _records(0, 2)}, {A: _records(3, 2)}, {A: _records(2, 4)}])

    async def deliver(batch: Batch) -> None:
        got.append(batch)

    asyncio.run(_drain(consumer, fetcher, deliver))
    offsets = [(b.tp.partition, [r.offset for r in b.records]) for b in got]
    # the third fetch starts at 2 (a seek back): only what lies past the read offset goes out again
    assert offsets == [(0, [0, 1, 2]), (1, [0, 1]), (0, [3, 4]), (0, [5])]
    assert consumer._read_offset[A] == 6 and consumer._read_offset[B] == 2


def test_a_batch_waiting_to_be_taken_holds_the_next_fetch(app: App) -> None:
    consumer: Any = app.consumer
    fetcher = _Fetcher([{A: _records(first, 2)} for first in (0, 2, 4)])

    async def run() -> list[int]:
        release = asyncio.Event()
        seen: list[int] = []

        async def deliver(batch: Batch) -> None:
            seen.append(fetcher.asked)
            await release.wait()  # a full agent channel: the fetcher waits here

        loop = asyncio.create_task(_drain(consumer, fetcher, deliver))
        await asyncio.sleep(0.2)
        held = fetcher.asked  # one fetch made, its batch not taken: no second fetch meanwhile
        release.set()
        await asyncio.wait_for(loop, 5)
        return [held, *seen]

    held, *seen = asyncio.run(run())
    assert held == 1 and seen == [1, 2, 3]


def test_nothing_is_delivered_while_the_flow_is_paused(app: App) -> None:
    consumer: Any = app.consumer
    fetcher = _Fetcher([{A: _records(first, 1)} for first in (10, 20, 30)])

    async def deliver(batch: Batch) -> None:
        raise AssertionError("delivered while paused")

    consumer.flow_active = False  # a rebalance in progress, or consumption paused
    asyncio.run(_drain(consumer, fetcher, deliver))
    assert fetcher.asked > 3


def test_a_batch_that_waited_through_a_rebalance_is_marked_stale_and_moves_no_read_offset(app: App) -> None:
    """A batch held by a full agent channel while a rebalance ran: the seek after the rebalance decides
    where reading resumes (here back to 2); the batch carries its old generation, so the worker drops it
    (it is fetched again) instead of applying it to the state restored meanwhile, past a gap."""
    consumer: Any = app.consumer
    fetcher = _Fetcher([{A: _records(5, 3)}])
    got: list[Batch] = []
    before = app.consumer_generation_id

    async def deliver(batch: Batch) -> None:
        got.append(batch)
        app.consumer_generation_id = before + 1  # a rebalance runs while the batch waits to be taken
        consumer._read_offset[A] = 2  # ... and its seek sets where to read from

    try:
        asyncio.run(_drain(consumer, fetcher, deliver))
    finally:
        app.consumer_generation_id = before
    assert [b.generation for b in got] == [before]
    assert consumer._read_offset[A] == 2  # not moved past the records the seek fetches again


# -- the private names answer_refused_requests relies on ----------------------------------------------------


def test_the_aiohttp_private_names_exist_on_the_pinned_version() -> None:
    assert aiohttp.__version__ == faust_compat.PINNED["aiohttp"]
    app = App("contract-compat", broker="kafka://127.0.0.1:1", store="memory://")

    async def server() -> web.Server:
        async def nothing(request: web.BaseRequest) -> web.StreamResponse:
            return web.Response()
        return web.Server(nothing)

    subjects = {faust_compat.AiohttpWeb: app.web, web.Server: asyncio.run(server())}
    for owner, names in faust_compat.WEB_PRIVATE_NAMES.items():
        subject = subjects.get(owner, owner)
        assert isinstance(subject, owner) or subject is owner, owner
        missing = [n for n in names if not hasattr(subject, n)]
        assert not missing, (owner, missing)
    before = app.web._runner
    refuse = lambda request, status, exc, headers: web.Response(status=status)  # noqa: E731
    faust_compat.answer_refused_requests(app, refuse, 8190, 16384, faust_compat.ConnectionBound(8, lambda: b""), 30.0)
    assert isinstance(app.web._runner, web.AppRunner) and app.web._runner is not before
    assert app.web._runner.app is app.web.web_app
