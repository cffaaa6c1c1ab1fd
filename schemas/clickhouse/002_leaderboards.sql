-- Leaderboards: rollups of the 10 s tallies to 1 minute and 1 hour, unique viewers at every level,
-- and the bookkeeping that keeps the rollups exact. Every statement is idempotent.
--
-- Why the tallies are not rolled up by a plain materialized view: tallies_10s holds *snapshots*. The
-- worker re-inserts the whole aggregate of a window each time it changes (one row per source
-- partition, `version` = offset), so a SummingMergeTree fed by an MV would add every re-flush again.
-- Instead an MV only *marks* which (minute, streamer) pairs were written (rollup_marks), and the
-- rollup job (streamproc/rollup.py) recomputes exactly those minutes from tallies_10s FINAL, summed
-- across source partitions, into ReplacingMergeTree tables; the same for hours from minutes.
-- Recomputing from the source is idempotent, so overlapping runs, several workers or a crash in the
-- middle of a run never double count.
--
-- Unique viewers need no such care: a uniq state is a set, re-inserting a viewer changes nothing, so
-- materialized views from viewers_in keep them at every level and uniqMerge combines any mix.
--
-- Lifetimes (TTL, counted from when a row was last written so that a replayed old day is kept like a
-- live one): 10 s data 6 hours (tallies_10s, 001), minutes 8 days, hours 400 days.

CREATE TABLE IF NOT EXISTS tallies_1m
(
    bucket            DateTime('UTC'),
    streamer_id       String,
    events            UInt64,
    enters            UInt64,
    leaves            UInt64,
    likes             UInt64,
    orders_paid       UInt64,
    orders_refunded   UInt64,
    items             Int64,
    gmv_fen           Int64,
    refund_fen        Int64,
    concurrent_peak   Int32,
    concurrent_close  Int32,
    close_at          DateTime64(3, 'UTC'),
    version           UInt64,
    rolled_at         DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (bucket, streamer_id)
TTL rolled_at + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS tallies_1h
(
    bucket            DateTime('UTC'),
    streamer_id       String,
    events            UInt64,
    enters            UInt64,
    leaves            UInt64,
    likes             UInt64,
    orders_paid       UInt64,
    orders_refunded   UInt64,
    items             Int64,
    gmv_fen           Int64,
    refund_fen        Int64,
    concurrent_peak   Int32,
    concurrent_close  Int32,
    close_at          DateTime64(3, 'UTC'),
    version           UInt64,
    rolled_at         DateTime DEFAULT now()
)
ENGINE = ReplacingMergeTree(version)
ORDER BY (bucket, streamer_id)
TTL rolled_at + INTERVAL 400 DAY;

-- (minute, streamer) pairs written to tallies_10s, by write time: what the rollup job must recompute.
CREATE TABLE IF NOT EXISTS rollup_marks
(
    marked_at   DateTime64(3, 'UTC'),
    minute      DateTime('UTC'),
    streamer_id String
)
ENGINE = MergeTree
ORDER BY (marked_at, minute, streamer_id)
TTL toDateTime(marked_at) + INTERVAL 2 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS rollup_marks_mv TO rollup_marks AS
SELECT now64(3) AS marked_at, toStartOfMinute(window_start) AS minute, streamer_id
FROM tallies_10s
GROUP BY minute, streamer_id;

-- How far the rollup job got: marks up to `cursor` are rolled; minutes before `minutes_upto` and hours
-- before `hours_upto` are complete in their rollup tables (queries read newer time from finer levels).
CREATE TABLE IF NOT EXISTS rollup_state
(
    name          String,
    cursor        DateTime64(3, 'UTC'),
    minutes_upto  DateTime('UTC'),
    hours_upto    DateTime('UTC'),
    updated_at    DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY name;

-- The data clock: newest window, newest event time and last flush, without scanning the tallies.
-- "now" of a leaderboard is the newest window in the data, so a replayed old day shows its own board.
CREATE TABLE IF NOT EXISTS tallies_clock
(
    k              UInt8,
    newest_window  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_event   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_flush   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = AggregatingMergeTree
ORDER BY k;

CREATE MATERIALIZED VIEW IF NOT EXISTS tallies_clock_mv TO tallies_clock AS
SELECT toUInt8(0) AS k, max(window_start) AS newest_window, max(max_ts) AS newest_event, now64(3) AS newest_flush
FROM tallies_10s;

-- Unique viewers per minute and per hour, straight from the distinct viewers the worker sends.
CREATE TABLE IF NOT EXISTS unique_viewers_1m
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniq, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 8 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS unique_viewers_1m_mv TO unique_viewers_1m AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM viewers_in
GROUP BY bucket, streamer_id;

CREATE TABLE IF NOT EXISTS unique_viewers_1h
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniq, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS unique_viewers_1h_mv TO unique_viewers_1h AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM viewers_in
GROUP BY bucket, streamer_id;

-- The 10 s viewer states get the lifetime of the 10 s tallies.
ALTER TABLE unique_viewers_10s ADD COLUMN IF NOT EXISTS seen_at SimpleAggregateFunction(max, DateTime) DEFAULT now();

ALTER TABLE unique_viewers_10s MODIFY TTL seen_at + INTERVAL 6 HOUR;

-- Session ids of a streamer's latest orders are looked up by time; orders arrive roughly in time order,
-- so a min/max index on ts skips almost everything.
ALTER TABLE orders ADD INDEX IF NOT EXISTS orders_ts_minmax ts TYPE minmax GRANULARITY 1;

-- Existing data (a store that ran before these tables existed) is brought in once; all of it is
-- idempotent: marks only cause recomputation, and uniq states are sets.
INSERT INTO rollup_marks (marked_at, minute, streamer_id)
SELECT now64(3), toStartOfMinute(window_start) AS minute, streamer_id FROM tallies_10s GROUP BY minute, streamer_id;

INSERT INTO tallies_clock (k, newest_window, newest_event, newest_flush)
SELECT 0, max(window_start), max(max_ts), now64(3) FROM tallies_10s HAVING count() > 0;

INSERT INTO unique_viewers_1m (bucket, streamer_id, viewers, seen_at)
SELECT toStartOfMinute(window_start) AS b, streamer_id, uniqMergeState(viewers), now() FROM unique_viewers_10s GROUP BY b, streamer_id;

INSERT INTO unique_viewers_1h (bucket, streamer_id, viewers, seen_at)
SELECT toStartOfHour(window_start) AS b, streamer_id, uniqMergeState(viewers), now() FROM unique_viewers_10s GROUP BY b, streamer_id
