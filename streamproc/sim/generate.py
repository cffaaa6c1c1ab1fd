"""A deterministic simulation of a rural livestream-commerce platform, written as Kafka records.

Why it exists: the pipeline (worker, sinks, reconcile, demo, benchmarks) needs input that looks like the
real thing — a few hundred farmer streamers in the counties the news reports name (Wugong kiwis, Funan
lotus roots, Shuyang flowers, Longnan prickly ash and olive oil, Shulan and Wuchang rice, Yiwu small
goods…), Zipf-skewed audiences, viewers entering and leaving, like storms, orders and refunds — *and* the
imperfections a real feed has (duplicates, out-of-order and late events, malformed messages of every
rejection reason in :mod:`streamproc.ingest.events`). Everything is drawn from one seeded PRNG, so the same
arguments give byte-identical output: a failing test or a benchmark can be replayed exactly.

Simulated rates (documented defaults, not parameters):

* ``EVENTS_PER_STREAMER_PER_S`` = 4 spontaneous events per second per streamer, i.e. **2,000 events per
  simulated second** for the default 500 streamers (100k events ≈ 50 simulated seconds), plus the
  scheduled ones (refunds, the leaves of viewers when a broadcast ends).
* Mix of spontaneous valid events: 60 % views, 32 % like bursts, 8 % orders; ~3 % of paid orders are
  refunded 5 s … a few minutes later.
* Concurrent audience of a live room tends towards ``AUDIENCE_PER_STREAMER`` × n × its Zipf share
  (exponent ``ZIPF_S``), scaled by a slow per-room wave and a 2-minute ramp after a broadcast starts.
  The simulation opens with every room empty (Singles' Day, 20:00: doors open), so audiences build up.
* Broadcasts last 30 … 180 min, rooms go dark for 10 … 60 min between them.

Every record is ``LogRecord(topic, key, ts, value)``: ``topic`` the logical topic, ``key`` the
streamer id, ``ts`` the simulated send time (non-decreasing in yield order), ``value`` the raw bytes.
:func:`generate_labeled` also says what each record was meant to be, which is what tests and
reconciliation check against.

Place names: provinces and counties are real and come from the news reports in the seed set (plus the
famous origins of the products they mention: Anxi and Menghai tea, Wuchang rice, Panjin crabs, Donggang
strawberries). Village names are illustrative, except Yanxia (堰下村, Shuyang's flower village) and
Qingyanliu (青岩刘村, Yiwu's best-known Taobao Village).
"""

from __future__ import annotations

import hashlib
import itertools
import math
import random
from bisect import bisect_right
from collections import deque
from datetime import datetime, timedelta, timezone
from heapq import heappop, heappush
from itertools import accumulate
from typing import Any, Iterator

import orjson

from streamproc.boards.dimension import Streamer
from streamproc.ingest.events import FIELDS, REASONS, SCHEMA_VERSION, TOPIC_OF_TYPE
from streamproc.logs.logfile import LogRecord
from streamproc.settings import Settings

__all__ = [
    "build_streamers",
    "generate",
    "generate_labeled",
    "DEFAULT_START_MS",
    "LABEL_VALID",
    "LABEL_DUPLICATE",
    "LABEL_LATE",
    "LABEL_LATE_ORDER",
    "MALFORMED_REASONS",
]

# 2026-11-11 20:00:00 Asia/Shanghai: Singles' Day evening, the busiest hour of the year.
DEFAULT_START_MS = int(datetime(2026, 11, 11, 20, tzinfo=timezone(timedelta(hours=8))).timestamp() * 1000)

LABEL_VALID = "valid"  # decodes to an event and is on time (possibly a little out of order)
LABEL_DUPLICATE = "duplicate"  # byte-identical re-delivery of an earlier valid record
LABEL_LATE = "late"  # decodes, but is older than the streamer's watermark by more than the lateness
# an order as late as that, but within the order dedupe horizon: a late payment, counted in its own window
LABEL_LATE_ORDER = "late_order"
# Every rejection reason ``events.decode`` can give on its own ("late" needs a watermark).
MALFORMED_REASONS = tuple(r for r in REASONS if r != "late")
# Oversized values are 66..100 KB each; they are half as frequent so a log does not balloon.
_MALFORMED_WEIGHTS = tuple(0.5 if r == "oversized" else 1.0 for r in MALFORMED_REASONS)

# --- simulated rates --------------------------------------------------------------------------------
EVENTS_PER_STREAMER_PER_S = 4.0
P_VIEW, P_LIKE = 0.60, 0.32  # the rest (0.08) are orders
AUDIENCE_PER_STREAMER = 100.0
ZIPF_S = 1.05
REFUND_P = 0.03
TICK_MS = 500  # how often session starts/ends, storms and the pick weights are refreshed
MIN_STAY_MS = 8_000  # a viewer stays at least this long (longer than any duplicate delay)
REENTER_GAP_MS = 10_000  # a viewer who left comes back at the earliest after this
REENTRY_P = 0.2  # share of enters that are returning fans of the room
DRAIN_MS = 20_000  # when a broadcast ends its viewers leave over this span
RAMP_MS = 120_000  # a new broadcast reaches its audience over this span
SESSION_MIN_MS, SESSION_SPAN_MS = 30 * 60_000, 150 * 60_000
OFFLINE_MIN_MS, OFFLINE_SPAN_MS = 10 * 60_000, 50 * 60_000
STORM_P = 0.002  # per live room and tick
STORM_MULT = 15.0
OOO_P = 0.03  # share of events held back by the client for 1..10 s (out of order, not late)
OOO_MIN_MS, OOO_MAX_MS = 1_000, 10_000
CLIENT_DELAY_MS = 250  # usual send delay
DUP_WINDOW_MS = 5_000  # duplicates arrive within this of the original
DUP_ORDER_SHARE = 0.6  # payment-callback retries dominate duplicates
LATE_EXTRA_MIN_MS, LATE_EXTRA_SPAN_MS = 5_000, 115_000
N_VIEWERS = 2_000_000  # size of the platform's user-id pool
MAX_VALUE_BYTES = Settings.max_message_bytes  # the oversized threshold the pipeline uses by default

TOPIC_VIEWS, TOPIC_LIKES, TOPIC_ORDERS = TOPIC_OF_TYPE["view"], TOPIC_OF_TYPE["like"], TOPIC_OF_TYPE["order"]
_TOPICS = (TOPIC_VIEWS, TOPIC_LIKES, TOPIC_ORDERS)


# --- the catalogue ----------------------------------------------------------------------------------
# product_id -> (category, short name for streamer names, price in fen). Prices are typical live-room
# prices: a 5 kg box of Wugong kiwis at 39.9 yuan, 5 jin of Funan lotus root at 19.9 yuan, …
_PRODUCTS: dict[str, tuple[str, str, int]] = {
    "p-wugong-kiwi-5kg": ("fruit", "猕猴桃", 3990),
    "p-wugong-apple-5kg": ("fruit", "苹果", 4590),
    "p-funan-lotus-root-2.5kg": ("vegetables", "莲藕", 1990),
    "p-funan-wicker-basket": ("specialties", "柳编", 4900),
    "p-eggs-free-range-30": ("meat_eggs", "土鸡蛋", 3590),
    "p-shuyang-succulents-12pot": ("flowers", "多肉", 2990),
    "p-shuyang-rose-seedling-3": ("flowers", "月季", 1990),
    "p-shuyang-bonsai": ("flowers", "盆景", 8800),
    "p-guangrao-donkey-meat-500g": ("meat_eggs", "驴肉", 6800),
    "p-guangrao-veg-box-5kg": ("vegetables", "蔬菜", 3990),
    "p-shenxian-melon-2.5kg": ("fruit", "香瓜", 2490),
    "p-shenxian-veg-box-2.5kg": ("vegetables", "蔬菜", 2490),
    "p-shulan-rice-5kg": ("grain", "大米", 5990),
    "p-wuchang-rice-5kg": ("grain", "稻花香", 7990),
    "p-dongning-black-fungus-250g": ("specialties", "木耳", 3990),
    "p-longnan-prickly-ash-250g": ("specialties", "花椒", 2990),
    "p-longnan-olive-oil-500ml": ("specialties", "橄榄油", 12800),
    "p-longnan-hongqi-250g": ("specialties", "红芪", 4900),
    "p-longnan-walnut-1kg": ("specialties", "核桃", 3590),
    "p-panjin-crab-gift-box": ("aquatic", "河蟹", 12800),
    "p-panjin-rice-5kg": ("grain", "大米", 4990),
    "p-donggang-strawberry-1.5kg": ("fruit", "草莓", 5990),
    "p-yiwu-storage-box": ("daily_goods", "小商品", 990),
    "p-yiwu-hair-clips": ("daily_goods", "发饰", 690),
    "p-yiwu-thermos-cup": ("daily_goods", "保温杯", 2990),
    "p-anxi-tieguanyin-250g": ("tea", "铁观音", 8800),
    "p-menghai-puer-cake-357g": ("tea", "普洱", 16800),
}

# (province, county, short name, villages, platform weights taobao/douyin/kuaishou, products, share)
_PLACES: tuple[tuple[str, str, str, tuple[str, ...], tuple[int, int, int], tuple[str, ...], int], ...] = (
    ("陕西省", "武功县", "武功", ("河道村", "南仁村", "绿野村", "东坡村"), (6, 3, 1),
     ("p-wugong-kiwi-5kg", "p-wugong-apple-5kg", "p-eggs-free-range-30"), 14),
    ("安徽省", "阜南县", "阜南", ("王家坝村", "黄岗村", "郜台村", "荷花村"), (3, 5, 3),
     ("p-funan-lotus-root-2.5kg", "p-funan-wicker-basket", "p-eggs-free-range-30"), 10),
    ("江苏省", "沭阳县", "沭阳", ("堰下村", "周圈村", "新河村"), (4, 4, 2),
     ("p-shuyang-succulents-12pot", "p-shuyang-rose-seedling-3", "p-shuyang-bonsai"), 12),
    ("山东省", "广饶县", "广饶", ("大王村", "稻庄村", "花官村"), (3, 4, 3),
     ("p-guangrao-donkey-meat-500g", "p-guangrao-veg-box-5kg", "p-eggs-free-range-30"), 6),
    ("山东省", "莘县", "莘县", ("燕店村", "张鲁村", "古城村"), (2, 4, 4),
     ("p-shenxian-melon-2.5kg", "p-shenxian-veg-box-2.5kg"), 6),
    ("吉林省", "舒兰市", "舒兰", ("平安村", "白旗村", "水曲柳村"), (2, 4, 4),
     ("p-shulan-rice-5kg", "p-dongning-black-fungus-250g"), 7),
    ("甘肃省", "武都区", "陇南", ("汉王村", "角弓村", "两水村", "柏林村"), (4, 3, 3),
     ("p-longnan-prickly-ash-250g", "p-longnan-olive-oil-500ml", "p-longnan-hongqi-250g", "p-longnan-walnut-1kg"), 9),
    ("黑龙江省", "五常市", "五常", ("龙凤山村", "民乐村", "杜家村"), (2, 4, 5),
     ("p-wuchang-rice-5kg", "p-eggs-free-range-30"), 6),
    ("黑龙江省", "东宁市", "东宁", ("绥阳村", "道河村"), (2, 3, 5),
     ("p-dongning-black-fungus-250g", "p-wuchang-rice-5kg"), 3),
    ("辽宁省", "盘山县", "盘锦", ("胡家村", "坝墙子村", "石新村"), (2, 4, 5),
     ("p-panjin-crab-gift-box", "p-panjin-rice-5kg"), 5),
    ("辽宁省", "东港市", "东港", ("椅圈村", "孤山村"), (2, 4, 4),
     ("p-donggang-strawberry-1.5kg", "p-panjin-crab-gift-box"), 4),
    ("浙江省", "义乌市", "义乌", ("青岩刘村", "何斯路村", "佛堂村"), (6, 4, 1),
     ("p-yiwu-storage-box", "p-yiwu-hair-clips", "p-yiwu-thermos-cup"), 8),
    ("福建省", "安溪县", "安溪", ("感德村", "西坪村", "祥华村"), (5, 4, 1),
     ("p-anxi-tieguanyin-250g",), 4),
    ("云南省", "勐海县", "勐海", ("老班章村", "贺开村", "南糯山村"), (4, 4, 2),
     ("p-menghai-puer-cake-357g",), 4),
)
_PLATFORMS = ("taobao", "douyin", "kuaishou")
_SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗"
_PERSONS = ("哥", "姐", "叔", "婶", "妹", "大姐", "小哥", "老乡")
_PREFIXES = ("", "", "小", "老", "阿")


def _place_of(rng: random.Random):
    cum = list(accumulate(p[6] for p in _PLACES))
    return _PLACES[bisect_right(cum, rng.random() * cum[-1])]


def streamers_for_rate(rate: float) -> int:
    """Rooms whose simulated clock keeps pace with the wall clock when published at ``rate`` events/s.

    Published faster than its simulated rate, a platform's events would claim times ahead of the
    reader's clock, which the pipeline refuses (``future``): a faster feed is a bigger platform.
    """
    return max(1, round(rate / EVENTS_PER_STREAMER_PER_S))


def simulated_span_ms(n_events: int, n_streamers: int = 500) -> int:
    """Event time that ``n_events`` of ``n_streamers`` rooms span (at the simulated rate)."""
    return int(n_events / (EVENTS_PER_STREAMER_PER_S * n_streamers) * 1000)


def build_streamers(n: int, seed: int) -> list[Streamer]:
    """The ``n`` rooms of the simulated platform, the same for the same ``(n, seed)``.

    ``generate(seed=s, n_streamers=n)`` simulates exactly ``build_streamers(n, s)``, so this is the
    dimension to load next to its events. Ids are ``s0000``, ``s0001``, … Places follow the news
    reports; a room's ``category`` is that of its main product, which ``generate`` sells most.
    """
    if n < 1:
        raise ValueError("n must be at least 1")
    rng = random.Random(f"streamproc.generate.streamers/{seed}")  # the seed's name predates the sim/ folder: kept, so logs stay byte-identical
    out = []
    width = max(4, len(str(n - 1)))
    for i in range(n):
        province, county, short, villages, pw, products, _ = _place_of(rng)
        main = products[0] if rng.random() < 0.6 else rng.choice(products)
        category, nick, _ = _PRODUCTS[main]
        person = rng.choice(_PREFIXES) + rng.choice(_SURNAMES) + rng.choice(_PERSONS)
        platform = rng.choices(_PLATFORMS, weights=pw)[0]
        out.append(
            Streamer(
                streamer_id=f"s{i:0{width}d}",
                name=f"{short}{nick}{person}",
                platform=platform,
                province=province,
                county=county,
                village=rng.choice(villages),
                category=category,
            )
        )
    return out


def _main_product(s: Streamer, rng: random.Random) -> list[tuple[str, str, int]]:
    """The products a room sells: its place's catalogue, its main category first."""
    place = next(p for p in _PLACES if p[1] == s.county)
    prods = [(pid, _PRODUCTS[pid][0], _PRODUCTS[pid][2]) for pid in place[5]]
    main = [p for p in prods if p[1] == s.category]
    rest = [p for p in prods if p[1] != s.category]
    rng.shuffle(rest)
    return main + rest


class _Room:
    __slots__ = (
        "i", "sid", "key", "weight", "base", "conv", "period", "phase", "products", "prod_cum",
        "live", "session", "sess_no", "sess_start", "sess_end", "next_start", "storm_until",
        "target", "inroom", "present", "arrivals", "leavers", "left",
    )  # fmt: skip


# --- the simulation ---------------------------------------------------------------------------------


def generate(n_events: int, **options: Any) -> Iterator[LogRecord]:
    """Yield exactly ``n_events`` Kafka records of the simulated platform, deterministically; the
    ``options`` are :func:`generate_labeled`'s (seed, start_ms, n_streamers, lateness_ms and the shares).

    ``start_ms=None`` is :data:`DEFAULT_START_MS` so output is reproducible; pass the current time to
    produce a live feed. ``lateness_ms`` is the pipeline's allowed lateness: late events are made older
    than it (by 5..120 s) and every other delay stays well inside it, so the verdicts are unambiguous.
    The shares are per output slot; the measured shares come out slightly lower because scheduled
    events (refunds, leaves at a broadcast's end) never turn into imperfections.
    """
    for rec, _ in generate_labeled(n_events, **options):
        yield rec


def generate_labeled(
    n_events: int,
    *,
    seed: int = 1,
    start_ms: int | None = None,
    n_streamers: int = 500,
    lateness_ms: int = Settings.lateness_ms,
    malformed_share: float = 0.005,
    duplicate_share: float = 0.01,
    late_share: float = 0.003,
) -> Iterator[tuple[LogRecord, str]]:
    """Like :func:`generate` (same records, same bytes), with what each record was meant to be.

    The label is :data:`LABEL_VALID`, :data:`LABEL_DUPLICATE`, :data:`LABEL_LATE`, :data:`LABEL_LATE_ORDER` or the rejection
    reason ``events.decode`` must give (one of :data:`MALFORMED_REASONS`), so a test or a reconciliation
    can check the pipeline against intent rather than against itself.
    """
    if n_events < 0:
        raise ValueError("n_events must be >= 0")
    if n_streamers < 1:
        raise ValueError("n_streamers must be >= 1")
    if lateness_ms < 0:
        raise ValueError("lateness_ms must be >= 0")
    shares = (malformed_share, duplicate_share, late_share)
    if any(not 0.0 <= s <= 1.0 for s in shares) or sum(shares) > 1.0:
        raise ValueError("shares must be in [0, 1] and sum to at most 1")
    return _Sim(
        seed, DEFAULT_START_MS if start_ms is None else int(start_ms), n_streamers, lateness_ms, *shares
    ).run(n_events)


class _Sim:
    """State of one simulation run; ``run`` is the hot loop (kept flat, with local aliases, for speed)."""

    def __init__(
        self, seed: int, start_ms: int, n_streamers: int, lateness_ms: int,
        malformed_share: float, duplicate_share: float, late_share: float,
    ) -> None:  # fmt: skip
        self.rng = rng = random.Random(f"streamproc.generate.events/{seed}")  # (name kept, as above)
        self.start_ms = start_ms
        self.lateness_ms = lateness_ms
        self.m_share, self.d_share, self.l_share = malformed_share, duplicate_share, late_share
        # Ids must not collide between runs that feed the same topics (e.g. two live runs "now").
        self.tag = hashlib.blake2b(f"{seed}:{start_ms}".encode(), digest_size=4).hexdigest()
        self.streamers = build_streamers(n_streamers, seed)
        # Every delay an on-time event can have stays below half the lateness, whatever it is set to.
        budget = lateness_ms // 4
        self.client_delay = min(CLIENT_DELAY_MS, budget)
        self.ooo_max = min(OOO_MAX_MS, budget)
        self.ooo_min = min(OOO_MIN_MS, self.ooo_max)
        self.dup_window = min(DUP_WINDOW_MS, budget)
        self.rate_per_ms = EVENTS_PER_STREAMER_PER_S * n_streamers / 1000.0

        ranks = list(range(1, n_streamers + 1))
        rng.shuffle(ranks)  # popularity is independent of id and place
        weights = [r**-ZIPF_S for r in ranks]
        total_w = sum(weights)
        self.rooms: list[_Room] = []
        for i, s in enumerate(self.streamers):
            r = _Room()
            r.i, r.sid, r.key = i, s.streamer_id, s.streamer_id.encode()
            r.weight = weights[i]
            r.base = AUDIENCE_PER_STREAMER * n_streamers * weights[i] / total_w
            r.conv = 0.5 + rng.random()
            r.period = 180_000 + rng.random() * 540_000
            r.phase = rng.random() * 2 * math.pi
            r.products = _main_product(s, rng)
            r.prod_cum = list(accumulate(0.65 if j == 0 else 0.35 / max(1, len(r.products) - 1)
                                         for j in range(len(r.products))))  # fmt: skip
            r.sess_no = 0
            r.storm_until = 0
            r.target = 1.0
            r.inroom, r.present, r.arrivals, r.leavers, r.left = {}, [], deque(), deque(maxlen=64), {}
            self.rooms.append(r)
            p_live = 0.9 if ranks[i] <= max(1, n_streamers // 10) else 0.65
            if rng.random() < p_live:  # on air since before the start
                dur = SESSION_MIN_MS + int(rng.random() * SESSION_SPAN_MS)
                self._start_session(r, start_ms - int(rng.random() * dur), dur)
            else:
                r.live, r.session, r.sess_start, r.sess_end = False, "", 0, 0
                r.next_start = start_ms + int(rng.random() * OFFLINE_SPAN_MS)
        self.heap: list = []
        self.seq = 0
        self.event_ids = itertools.count(1)  # ids are f"e-{tag}-{n:x}", orders f"o-{tag}-{n:x}"
        self.order_ids = itertools.count(1)
        self.wm = [[0] * n_streamers for _ in _TOPICS]  # newest on-time event ts per topic and room
        self.ring_orders: deque = deque()  # recent on-time records, candidates for re-delivery
        self.ring_other: deque = deque()
        self.big = "E/net timeout;retry " * 5_000  # 100 KB of client log for oversized values
        self.live: list[_Room] = []  # rooms on air and the cumulative pick weights, set by _tick
        self.view_cum: list[float] = []
        self.like_cum: list[float] = []
        self.order_cum: list[float] = []

    # -- sessions --------------------------------------------------------------------------------
    def _start_session(self, r: _Room, at: int, dur: int | None = None) -> None:
        if dur is None:
            dur = SESSION_MIN_MS + int(self.rng.random() * SESSION_SPAN_MS)
        r.sess_no += 1
        r.live = True
        r.session = f"{r.sid}-{self.tag}-{r.sess_no}"
        r.sess_start, r.sess_end = at, at + dur
        r.next_start = 0
        r.storm_until = 0

    def _end_session(self, r: _Room, now: int) -> None:
        """The broadcast stops: everyone still in the room leaves over the next seconds."""
        rnd = self.rng.random
        for v, (ets, esend) in r.inroom.items():
            when = max(now + int(rnd() * DRAIN_MS), esend + MIN_STAY_MS)
            self.seq += 1
            heappush(self.heap, (when, self.seq, 1, (r, v, ets, r.session)))
        r.inroom, r.present, r.arrivals, r.left = {}, [], deque(), {}
        r.live = False
        r.next_start = now + OFFLINE_MIN_MS + int(rnd() * OFFLINE_SPAN_MS)

    def _tick(self, now: int) -> None:
        """Refresh what changes slowly: broadcasts, storms, audience targets and the pick weights."""
        rnd = self.rng.random
        for r in self.rooms:
            if r.live:
                if r.sess_end <= now:
                    self._end_session(r, now)
            elif r.next_start <= now:
                self._start_session(r, now)
        live = [r for r in self.rooms if r.live]
        if not live:  # keep at least one room on air
            r = min(self.rooms, key=lambda x: (x.next_start, x.i))
            self._start_session(r, now)
            live = [r]
        two_pi = 2 * math.pi
        like_w, order_w = [], []
        for r in live:
            ramp = min(1.0, (now - r.sess_start) / RAMP_MS)
            wave = 1.0 + 0.3 * math.sin(two_pi * now / r.period + r.phase)
            r.target = max(1.0, r.base * ramp * wave)
            if r.storm_until <= now and rnd() < STORM_P:
                r.storm_until = now + 4_000 + int(rnd() * 14_000)
            n_in = len(r.inroom)
            like_w.append(n_in * (STORM_MULT if r.storm_until > now else 1.0))
            order_w.append(n_in * r.conv)
        self.live = live
        self.view_cum = list(accumulate(r.weight for r in live))
        self.like_cum = list(accumulate(like_w))
        self.order_cum = list(accumulate(order_w))
        horizon = now - self.dup_window
        for ring in (self.ring_orders, self.ring_other):
            while ring and ring[0].ts < horizon:
                ring.popleft()

    # -- the hot loop ----------------------------------------------------------------------------
    def run(self, n_events: int) -> Iterator[tuple[LogRecord, str]]:
        rng = self.rng
        rnd = rng.random
        expo = rng.expovariate
        log = math.log
        inv_rate = -1.0 / self.rate_per_ms
        dumps = orjson.dumps
        heap = self.heap
        tag = self.tag
        lateness = self.lateness_ms
        client_delay, ooo_min, ooo_span = self.client_delay, self.ooo_min, self.ooo_max - self.ooo_min
        dup_window = self.dup_window
        wm_views, wm_likes, wm_orders = self.wm
        ring_orders, ring_other = self.ring_orders, self.ring_other
        m_cut = self.m_share
        d_cut = m_cut + self.d_share
        l_cut = d_cut + self.l_share
        p_like_cut = P_VIEW + P_LIKE

        def pick(cum: list[float], live: list[_Room]) -> _Room | None:
            if not cum or cum[-1] <= 0:
                return None
            j = bisect_right(cum, rnd() * cum[-1])
            return live[j if j < len(live) else len(live) - 1]

        def ev_ts(now: int) -> int:
            if rnd() < OOO_P and ooo_span >= 0 and ooo_min > 0:
                return now - ooo_min - int(rnd() * ooo_span)
            return now - int(rnd() * client_delay)

        event_ids, order_ids = self.event_ids, self.order_ids
        e_prefix, o_prefix = f"e-{tag}-", f"o-{tag}-"

        def next_id() -> str:
            return f"{e_prefix}{next(event_ids):x}"

        def new_viewer(r: _Room, now: int) -> str:
            # Someone who left re-enters only after REENTER_GAP_MS, so that a re-delivered copy of
            # their leave can never arrive after the new enter.
            inroom, left = r.inroom, r.left
            gap = now - REENTER_GAP_MS
            lv = r.leavers
            if lv and rnd() < REENTRY_P and lv[0][0] <= gap:
                v = lv.popleft()[1]
                if v not in inroom and left.get(v, gap) <= gap:
                    return v
            while True:
                v = f"u{int(rnd() * N_VIEWERS):07d}"
                if v not in inroom and left.get(v, gap) <= gap:
                    return v

        def some_viewer(r: _Room) -> str:
            pl = r.present
            if pl:
                return pl[int(rnd() * len(pl))]
            return r.arrivals[0][1]

        def view(r: _Room, now: int) -> dict:
            inroom = r.inroom
            n_in = len(inroom)
            if rnd() * (r.target + n_in) >= r.target:  # leave, if someone may
                arr, pl = r.arrivals, r.present
                while arr and arr[0][0] <= now:
                    pl.append(arr.popleft()[1])
                if pl:
                    j = int(rnd() * len(pl))
                    v = pl[j]
                    last = pl.pop()
                    if j < len(pl):
                        pl[j] = last
                    ets = inroom.pop(v)[0]
                    r.leavers.append((now, v))
                    r.left[v] = now
                    ts = ev_ts(now)
                    return {"schema_version": SCHEMA_VERSION, "type": "view", "event_id": next_id(),
                            "ts": ts if ts > ets else ets + 1, "streamer_id": r.sid, "session_id": r.session,
                            "viewer_id": v, "action": "leave"}  # fmt: skip
            v = new_viewer(r, now)
            ts = ev_ts(now)
            inroom[v] = (ts, now)
            r.arrivals.append((now + MIN_STAY_MS, v))
            return {"schema_version": SCHEMA_VERSION, "type": "view", "event_id": next_id(), "ts": ts,
                    "streamer_id": r.sid, "session_id": r.session, "viewer_id": v, "action": "enter"}  # fmt: skip

        def like(r: _Room, now: int, ts: int) -> dict:
            if r.storm_until > now:
                count = 5 + int(rnd() ** 2 * 200)
            elif rnd() < 0.55:
                count = 1
            else:
                count = 2 + int(rnd() ** 2 * 30)
            return {"schema_version": SCHEMA_VERSION, "type": "like", "event_id": next_id(), "ts": ts,
                    "streamer_id": r.sid, "session_id": r.session, "viewer_id": some_viewer(r), "count": count}  # fmt: skip

        def order(r: _Room, ts: int) -> dict:
            pid, cat, price = r.products[bisect_right(r.prod_cum, rnd() * r.prod_cum[-1])]
            x = rnd()
            q = 1 if x < 0.72 else 2 if x < 0.9 else 3 if x < 0.96 else 4 + int(rnd() * 7)
            amount = price * q
            if q > 1 and rnd() < 0.5:  # live-room deal: 10 % off every extra item
                amount -= (price // 10) * (q - 1)
            return {"schema_version": SCHEMA_VERSION, "type": "order", "event_id": next_id(), "ts": ts,
                    "streamer_id": r.sid, "session_id": r.session, "viewer_id": some_viewer(r),
                    "order_id": f"{o_prefix}{next(order_ids):x}", "product_id": pid, "category": cat,
                    "quantity": q, "amount_fen": amount, "status": "paid"}  # fmt: skip

        t_next = float(self.start_ms)
        next_tick = self.start_ms
        last = self.start_ms
        emitted = 0
        while emitted < n_events:
            if heap and heap[0][0] <= t_next:
                from_heap = True
                cand = heap[0][0]
            else:
                from_heap = False
                cand = t_next
            if cand >= next_tick:
                self._tick(next_tick)
                next_tick += TICK_MS
                continue
            label = LABEL_VALID
            if from_heap:
                now, _, kind, item = heappop(heap)
                if now < last:
                    now = last
                if kind == 0:  # refund of an earlier paid order
                    r, paid = item
                    obj = dict(paid)
                    obj["event_id"] = next_id()
                    ts = ev_ts(now)
                    obj["ts"] = ts if ts > paid["ts"] else paid["ts"] + 1
                    obj["status"] = "refunded"
                    topic, wm = TOPIC_ORDERS, wm_orders
                else:  # a viewer leaves a broadcast that has ended
                    r, v, ets, session = item
                    ts = ev_ts(now)
                    obj = {"schema_version": SCHEMA_VERSION, "type": "view", "event_id": next_id(),
                           "ts": ts if ts > ets else ets + 1, "streamer_id": r.sid, "session_id": session,
                           "viewer_id": v, "action": "leave"}  # fmt: skip
                    topic, wm = TOPIC_VIEWS, wm_views
            else:
                now = int(t_next)
                t_next += log(1.0 - rnd()) * inv_rate  # exponential gaps: a Poisson stream
                if now < last:
                    now = last
                u = rnd()
                live = self.live
                if u < m_cut:
                    label, topic, key, value = self._malformed(now)
                    emitted += 1
                    last = now
                    yield LogRecord(topic, key, now, value), label
                    continue
                if u < d_cut:  # re-delivery of a recent record
                    ring = ring_orders if (ring_orders and rnd() < DUP_ORDER_SHARE) or not ring_other else ring_other
                    while ring and ring[0].ts < now - dup_window:
                        ring.popleft()
                    if ring:
                        orig = ring[int(rnd() * len(ring))]
                        emitted += 1
                        last = now
                        yield LogRecord(orig.topic, orig.key, now, orig.value), LABEL_DUPLICATE
                        continue
                elif u < l_cut:  # a phone that lost signal sends what it held back
                    is_like = rnd() < 0.7
                    r = pick(self.like_cum if is_like else self.order_cum, live)
                    if r is not None and r.inroom:
                        # Late behind the room's newest event of this topic, which is itself recent:
                        # late by any watermark (per topic or per streamer), but not absurdly old.
                        i = r.i
                        w = (wm_likes if is_like else wm_orders)[i]
                        w_all = max(wm_views[i], wm_likes[i], wm_orders[i])
                        ts = w - lateness - LATE_EXTRA_MIN_MS - int(rnd() * LATE_EXTRA_SPAN_MS)
                        if w > 0 and w >= w_all - OOO_MAX_MS and ts >= r.sess_start:
                            obj = like(r, now, ts) if is_like else order(r, ts)
                            emitted += 1
                            last = now
                            yield (LogRecord(TOPIC_LIKES if is_like else TOPIC_ORDERS, r.key, now, dumps(obj)),
                                   LABEL_LATE if is_like else LABEL_LATE_ORDER)
                            continue
                k = rnd()
                r = None
                if k >= P_VIEW:
                    if k < p_like_cut:
                        r = pick(self.like_cum, live)
                        if r is not None and r.inroom:
                            obj = like(r, now, ev_ts(now))
                            topic, wm = TOPIC_LIKES, wm_likes
                        else:
                            r = None
                    else:
                        r = pick(self.order_cum, live)
                        if r is not None and r.inroom:
                            obj = order(r, ev_ts(now))
                            topic, wm = TOPIC_ORDERS, wm_orders
                            if rnd() < REFUND_P:
                                self.seq += 1
                                when = now + 6_000 + int(expo(1 / 60_000.0))
                                heappush(heap, (when, self.seq, 0, (r, obj)))
                        else:
                            r = None
                if r is None:
                    r = pick(self.view_cum, live)
                    obj = view(r, now)
                    topic, wm = TOPIC_VIEWS, wm_views
            rec = LogRecord(topic, r.key, now, dumps(obj))
            ts = obj["ts"]
            if ts > wm[r.i]:
                wm[r.i] = ts
            (ring_orders if topic is TOPIC_ORDERS else ring_other).append(rec)
            emitted += 1
            last = now
            yield rec, label

    # -- malformed input -------------------------------------------------------------------------
    def _malformed(self, now: int) -> tuple[str, str, bytes | None, bytes]:
        """One bad record, built from a plausible event without touching the simulation state.

        Each kind of damage is chosen so that exactly one check of ``events.decode`` fails, and it is
        the one named by the returned label.
        """
        rng = self.rng
        rnd = rng.random
        reason = rng.choices(MALFORMED_REASONS, weights=_MALFORMED_WEIGHTS)[0]
        if reason in ("negative_amount", "absurd_amount"):
            kind = "order"
        else:
            x = rnd()
            kind = "view" if x < 0.35 else "like" if x < 0.6 else "order"
        live = self.live
        r = live[bisect_right(self.view_cum, rnd() * self.view_cum[-1])] if live else self.rooms[0]
        obj: dict = {
            "schema_version": SCHEMA_VERSION,
            "type": kind,
            "event_id": f"e-{self.tag}-{next(self.event_ids):x}",
            "ts": now - int(rnd() * self.client_delay),
            "streamer_id": r.sid,
            "session_id": r.session or f"{r.sid}-{self.tag}-0",
            "viewer_id": f"u{int(rnd() * N_VIEWERS):07d}",
        }
        if kind == "view":
            obj["action"] = "enter" if rnd() < 0.6 else "leave"
        elif kind == "like":
            obj["count"] = 1 + int(rnd() * 20)
        else:
            pid, cat, price = r.products[int(rnd() * len(r.products))]
            obj.update(order_id=f"o-{self.tag}-{next(self.order_ids):x}", product_id=pid, category=cat,
                       quantity=1, amount_fen=price, status="paid")  # fmt: skip
        topic = TOPIC_OF_TYPE[kind]
        key: bytes | None = r.key
        dumps = orjson.dumps

        if reason == "oversized":  # a client that attaches its whole debug log
            obj["client_log"] = self.big[: MAX_VALUE_BYTES + 500 + int(rnd() * 34_000)]
            value = dumps(obj)
        elif reason == "invalid_utf8":  # a comment typed on a phone that sends GBK
            obj["comment"] = "@@"
            gbk = rng.choice(("好吃", "已下单", "主播辛苦了", "多少钱一斤", "拍了两箱")).encode("gbk")
            value = dumps(obj).replace(b'"@@"', b'"' + gbk + b'"')
        elif reason == "malformed_json":
            raw = dumps(obj)  # all ASCII, so any cut is still UTF-8
            x = rnd()
            if x < 0.6:  # connection dropped mid-message
                value = raw[: 1 + int(rnd() * (len(raw) - 2))]
            elif x < 0.8:  # Python repr instead of JSON
                value = str(obj).encode()
            else:  # trailing comma
                value = raw[:-1] + b",}"
        elif reason == "not_object":
            x = rnd()
            if x < 0.5:  # a batch sent as one message
                value = b"[" + dumps(obj) + b"]"
            elif x < 0.7:
                value = b"null"
            elif x < 0.85:
                value = str(obj.get("amount_fen", 3990)).encode()
            else:
                value = b'"' + kind.encode() + b'"'
        elif reason == "missing_field":
            name = rng.choice(("type",) + tuple(f[0] for f in FIELDS[kind]))
            if rnd() < 0.8:
                del obj[name]
            else:
                obj[name] = None
            value = dumps(obj)
        elif reason == "wrong_type":
            options: list[tuple[str, object]] = [
                ("ts", str(obj["ts"])),
                ("viewer_id", int(obj["viewer_id"][1:])),
                ("schema_version", "1"),
                ("type", 1),
            ]
            if kind == "order":
                options += [("amount_fen", obj["amount_fen"] / 100), ("amount_fen", str(obj["amount_fen"])),
                            ("amount_fen", float(obj["amount_fen"])), ("quantity", "1")] * 2  # fmt: skip
            elif kind == "like":
                options += [("count", True), ("count", str(obj["count"])), ("count", float(obj["count"]))] * 2
            else:
                options += [("action", True), ("action", 1)] * 2
            name, val = rng.choice(options)
            obj[name] = val
            value = dumps(obj)
        elif reason == "unknown_type":
            obj["type"] = rng.choice(("gift", "share", "follow", "comment", "View", "ORDER"))
            value = dumps(obj)
        elif reason == "wrong_topic":  # mostly an order sent to the views topic
            topic = rng.choice([t for t in _TOPICS if t != topic] + ([TOPIC_VIEWS] * 2 if kind == "order" else []))
            value = dumps(obj)
        elif reason == "unsupported_version":
            obj["schema_version"] = rng.choice((0, 2, 2, 3))
            value = dumps(obj)
        elif reason == "bad_value":
            options = [("event_id", ""), ("session_id", ""), ("ts", obj["ts"] // 1000),
                       ("viewer_id", "u" * 65)]  # fmt: skip
            if kind == "view":
                options += [("action", "dance"), ("action", "exit"), ("action", "Enter")] * 2
            elif kind == "like":
                options += [("count", 0), ("count", 20_000), ("count", -3)] * 2
            else:
                options += [("quantity", 0), ("status", "pending"), ("status", "cancelled")] * 2
            name, val = rng.choice(options)
            obj[name] = val
            value = dumps(obj)
        elif reason == "negative_amount":  # a refund written as a negative sale
            obj["amount_fen"] = -obj["amount_fen"]
            value = dumps(obj)
        elif reason == "absurd_amount":  # fen multiplied once too often
            obj["amount_fen"] = obj["amount_fen"] * 100_000_000
            value = dumps(obj)
        elif reason == "key_mismatch":
            rooms = self.rooms
            if len(rooms) > 1 and rnd() < 0.5:
                j = int(rnd() * (len(rooms) - 1))
                key = rooms[j if j < r.i else j + 1].key
            else:
                key = r.sid.upper().encode()
            value = dumps(obj)
        else:  # future: a phone clock eight hours ahead, or just wrong
            obj["ts"] = now + (28_800_000 if rnd() < 0.5 else 300_001 + int(rnd() * 3_300_000))
            value = dumps(obj)
        return reason, topic, key, value
