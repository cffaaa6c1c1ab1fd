-- GENERATED FILE, do not edit: `streamproc schema cluster-sql --out deploy/clickhouse/cluster.sql` writes it from the migrations
-- schemas/clickhouse/*.sql (streamproc/store/cluster.py says how each statement is translated, and a test
-- fails when this file and the migrations disagree). Change a migration, then run the command again.
--
-- streamproc on a ClickHouse cluster: replicated local tables on every shard, Distributed tables over them
-- under the names the worker uses. Run it once with clickhouse-client before the first worker starts:
--     clickhouse-client --host <any node> --multiquery < deploy/clickhouse/cluster.sql
-- It records every migration it contains as applied, so a worker's `schema apply` skips them; it is
-- idempotent, so after a new migration the regenerated file can be run again on the same cluster.
--
-- Assumes a cluster named `streamproc` in remote_servers, Keeper, and the macros {shard} and {replica}
-- ({replica} unique per node, e.g. its host name). docs/SCALING.md says how many shards and why.
--
-- Sharding is by SOURCE PARTITION (src_topic, src_partition) for everything the worker restores from:
-- every snapshot version of a window row, its checkpoint and its order ids then live on one shard, so
-- ReplacingMergeTree / FINAL deduplicate correctly per shard and a restore reads one shard's data.
-- Leaderboards sum a streamer's rows over source partitions, which a Distributed query does across
-- shards. Audience states are sharded by streamer; uniqExactMerge combines states from any shards.

CREATE DATABASE IF NOT EXISTS streamproc ON CLUSTER streamproc;

-- What the worker's user needs from a cluster (attach with: ALTER USER <user> SETTINGS PROFILE
-- 'streamproc_writer'):
--  * distributed_foreground_insert: an acknowledged flush is on its shard, and the window rows of a flush
--    land before its checkpoint (the order the exactness argument relies on).
--  * insert_quorum 'auto': ... on a majority of the shard's replicas, so losing a replica loses nothing
--    that was checkpointed; select_sequential_consistency makes the restore read only such data.
--  * distributed_product_mode 'global': the rollup job's IN (SELECT … FROM rollup_marks) over
--    Distributed tables runs once, not once per shard (the default, 'deny', refuses it).
CREATE SETTINGS PROFILE IF NOT EXISTS streamproc_writer ON CLUSTER streamproc SETTINGS
    distributed_foreground_insert = 1,
    insert_quorum = 'auto',
    insert_quorum_parallel = 1,
    select_sequential_consistency = 1,
    distributed_product_mode = 'global';

-- ---- the ledger of applied migrations (store/base.py) ---------------------------------------------

CREATE TABLE IF NOT EXISTS streamproc.schema_migrations ON CLUSTER streamproc (name String, applied_at DateTime DEFAULT now()) ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/streamproc/schema_migrations', '{replica}') ORDER BY name;

-- ==== schemas/clickhouse/001_core.sql ====================================================================

-- Core tables: per-source-partition window snapshots, unique viewers, order facts, checkpoints.
-- Applied in order by `streamproc schema apply`; every statement is idempotent.

-- One row per (10 s window, streamer, source partition). The worker re-flushes the whole snapshot of
-- a window whenever it changes; `version` is the source partition's last applied offset at that flush,
-- so the highest version is always the complete aggregate of a prefix of the partition's log.
CREATE TABLE IF NOT EXISTS streamproc.tallies_10s_local ON CLUSTER streamproc
(
    window_start      DateTime64(3, 'UTC'),
    streamer_id       String,
    src_topic         LowCardinality(String),
    src_partition     UInt16,
    version           UInt64,
    last_offset       UInt64,
    max_ts            DateTime64(3, 'UTC'),
    events            UInt32,
    enters            UInt32,
    leaves            UInt32,
    concurrent_peak   Int32,
    concurrent_close  Int32,
    likes             UInt64,
    orders_paid       UInt32,
    orders_refunded   UInt32,
    items             Int64,
    gmv_fen           Int64,
    refund_fen        Int64,
    flushed_at        DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/tallies_10s', '{replica}', version)
ORDER BY (window_start, streamer_id, src_topic, src_partition)
TTL toDateTime(flushed_at) + INTERVAL 6 HOUR;

CREATE TABLE IF NOT EXISTS streamproc.tallies_10s ON CLUSTER streamproc AS streamproc.tallies_10s_local
ENGINE = Distributed(streamproc, streamproc, tallies_10s_local, cityHash64(src_topic, src_partition));

-- Distinct viewers per window go through a Null table; the materialized view keeps a mergeable
-- uniq state, so unique viewers over any range is uniqMerge (summing counts could not give it).
CREATE TABLE IF NOT EXISTS streamproc.viewers_in_local ON CLUSTER streamproc
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewer_id    String
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS streamproc.viewers_in ON CLUSTER streamproc AS streamproc.viewers_in_local
ENGINE = Distributed(streamproc, streamproc, viewers_in_local, cityHash64(streamer_id));

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_10s_local ON CLUSTER streamproc
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewers      AggregateFunction(uniq, String)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/unique_viewers_10s', '{replica}')
ORDER BY (window_start, streamer_id);

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_10s ON CLUSTER streamproc AS streamproc.unique_viewers_10s_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_10s_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_10s_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_10s_local AS
SELECT window_start, streamer_id, uniqState(viewer_id) AS viewers
FROM streamproc.viewers_in_local
GROUP BY window_start, streamer_id;

-- The first accepted occurrence of each (order_id, status). Keyed by its source offset (and index
-- within a pack of events), so a re-flush after a crash rewrites the same row; restore reads it back
-- to rebuild order dedupe.
CREATE TABLE IF NOT EXISTS streamproc.orders_local ON CLUSTER streamproc
(
    src_topic     LowCardinality(String),
    src_partition UInt16,
    src_offset    UInt64,
    src_index     UInt32,
    order_id      String,
    status        LowCardinality(String),
    ts            DateTime64(3, 'UTC'),
    window_start  DateTime64(3, 'UTC'),
    streamer_id   String,
    session_id    String,
    viewer_id     String,
    product_id    String,
    category      LowCardinality(String),
    quantity      UInt32,
    amount_fen    Int64
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/orders', '{replica}')
ORDER BY (src_topic, src_partition, src_offset, src_index);

CREATE TABLE IF NOT EXISTS streamproc.orders ON CLUSTER streamproc AS streamproc.orders_local
ENGINE = Distributed(streamproc, streamproc, orders_local, cityHash64(src_topic, src_partition));

-- Last applied offset per source partition, written after the rows of each flush.
CREATE TABLE IF NOT EXISTS streamproc.checkpoints_local ON CLUSTER streamproc
(
    src_topic     LowCardinality(String),
    src_partition UInt16,
    last_offset   UInt64,
    updated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/checkpoints', '{replica}', last_offset)
ORDER BY (src_topic, src_partition);

CREATE TABLE IF NOT EXISTS streamproc.checkpoints ON CLUSTER streamproc AS streamproc.checkpoints_local
ENGINE = Distributed(streamproc, streamproc, checkpoints_local, cityHash64(src_topic, src_partition));

-- The streamers dimension: where a room broadcasts from and what it sells.
CREATE TABLE IF NOT EXISTS streamproc.streamers ON CLUSTER streamproc
(
    streamer_id String,
    name        String,
    platform    LowCardinality(String),
    province    LowCardinality(String),
    county      String,
    village     String,
    category    LowCardinality(String),
    updated_at  DateTime DEFAULT now()
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/streamproc/streamers', '{replica}', updated_at)
ORDER BY streamer_id;

-- ==== schemas/clickhouse/002_leaderboards.sql ============================================================

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
CREATE TABLE IF NOT EXISTS streamproc.tallies_1m_local ON CLUSTER streamproc
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/tallies_1m', '{replica}', version)
ORDER BY (bucket, streamer_id)
TTL rolled_at + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS streamproc.tallies_1m ON CLUSTER streamproc AS streamproc.tallies_1m_local
ENGINE = Distributed(streamproc, streamproc, tallies_1m_local, cityHash64(streamer_id));

CREATE TABLE IF NOT EXISTS streamproc.tallies_1h_local ON CLUSTER streamproc
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
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/tallies_1h', '{replica}', version)
ORDER BY (bucket, streamer_id)
TTL rolled_at + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS streamproc.tallies_1h ON CLUSTER streamproc AS streamproc.tallies_1h_local
ENGINE = Distributed(streamproc, streamproc, tallies_1h_local, cityHash64(streamer_id));

-- (minute, streamer) pairs written to tallies_10s, by write time: what the rollup job must recompute.
CREATE TABLE IF NOT EXISTS streamproc.rollup_marks_local ON CLUSTER streamproc
(
    marked_at   DateTime64(3, 'UTC'),
    minute      DateTime('UTC'),
    streamer_id String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/streamproc/rollup_marks', '{replica}')
ORDER BY (marked_at, minute, streamer_id)
TTL toDateTime(marked_at) + INTERVAL 2 DAY;

CREATE TABLE IF NOT EXISTS streamproc.rollup_marks ON CLUSTER streamproc AS streamproc.rollup_marks_local
ENGINE = Distributed(streamproc, streamproc, rollup_marks_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.rollup_marks_mv ON CLUSTER streamproc
TO streamproc.rollup_marks_local AS
SELECT now64(3) AS marked_at, toStartOfMinute(window_start) AS minute, streamer_id
FROM streamproc.tallies_10s_local
GROUP BY minute, streamer_id;

-- How far the rollup job got: marks up to `cursor` are rolled; minutes before `minutes_upto` and hours
-- before `hours_upto` are complete in their rollup tables (queries read newer time from finer levels).
CREATE TABLE IF NOT EXISTS streamproc.rollup_state ON CLUSTER streamproc
(
    name          String,
    cursor        DateTime64(3, 'UTC'),
    minutes_upto  DateTime('UTC'),
    hours_upto    DateTime('UTC'),
    updated_at    DateTime64(6, 'UTC') DEFAULT now64(6)
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/streamproc/rollup_state', '{replica}', updated_at)
ORDER BY name;

-- The data clock: newest window, newest event time and last flush, without scanning the tallies.
-- "now" of a leaderboard is the newest window in the data, so a replayed old day shows its own board.
CREATE TABLE IF NOT EXISTS streamproc.tallies_clock_local ON CLUSTER streamproc
(
    k              UInt8,
    newest_window  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_event   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_flush   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/tallies_clock', '{replica}')
ORDER BY k;

CREATE TABLE IF NOT EXISTS streamproc.tallies_clock ON CLUSTER streamproc AS streamproc.tallies_clock_local
ENGINE = Distributed(streamproc, streamproc, tallies_clock_local, rand());

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.tallies_clock_mv ON CLUSTER streamproc
TO streamproc.tallies_clock_local AS
SELECT toUInt8(0) AS k, max(window_start) AS newest_window, max(max_ts) AS newest_event, now64(3) AS newest_flush
FROM streamproc.tallies_10s_local;

-- Unique viewers per minute and per hour, straight from the distinct viewers the worker sends.
CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1m_local ON CLUSTER streamproc
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniq, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/unique_viewers_1m', '{replica}')
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1m ON CLUSTER streamproc AS streamproc.unique_viewers_1m_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_1m_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_1m_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_1m_local AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local
GROUP BY bucket, streamer_id;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1h_local ON CLUSTER streamproc
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniq, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/unique_viewers_1h', '{replica}')
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1h ON CLUSTER streamproc AS streamproc.unique_viewers_1h_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_1h_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_1h_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_1h_local AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local
GROUP BY bucket, streamer_id;

-- The 10 s viewer states get the lifetime of the 10 s tallies.
ALTER TABLE streamproc.unique_viewers_10s_local ON CLUSTER streamproc ADD COLUMN IF NOT EXISTS seen_at SimpleAggregateFunction(max, DateTime) DEFAULT now();

ALTER TABLE streamproc.unique_viewers_10s ON CLUSTER streamproc ADD COLUMN IF NOT EXISTS seen_at SimpleAggregateFunction(max, DateTime) DEFAULT now();

ALTER TABLE streamproc.unique_viewers_10s_local ON CLUSTER streamproc MODIFY TTL seen_at + INTERVAL 6 HOUR;

-- Session ids of a streamer's latest orders are looked up by time; orders arrive roughly in time order,
-- so a min/max index on ts skips almost everything.
ALTER TABLE streamproc.orders_local ON CLUSTER streamproc ADD INDEX IF NOT EXISTS orders_ts_minmax ts TYPE minmax GRANULARITY 1;

-- Existing data (a store that ran before these tables existed) is brought in once; all of it is
-- idempotent: marks only cause recomputation, and uniq states are sets.
INSERT INTO streamproc.rollup_marks (marked_at, minute, streamer_id)
SELECT now64(3), toStartOfMinute(window_start) AS minute, streamer_id FROM streamproc.tallies_10s GROUP BY minute, streamer_id;

INSERT INTO streamproc.tallies_clock (k, newest_window, newest_event, newest_flush)
SELECT 0, max(window_start), max(max_ts), now64(3) FROM streamproc.tallies_10s HAVING count() > 0;

INSERT INTO streamproc.unique_viewers_1m (bucket, streamer_id, viewers, seen_at)
SELECT toStartOfMinute(window_start) AS b, streamer_id, uniqMergeState(viewers), now() FROM streamproc.unique_viewers_10s GROUP BY b, streamer_id;

INSERT INTO streamproc.unique_viewers_1h (bucket, streamer_id, viewers, seen_at)
SELECT toStartOfHour(window_start) AS b, streamer_id, uniqMergeState(viewers), now() FROM streamproc.unique_viewers_10s GROUP BY b, streamer_id;

-- ==== schemas/clickhouse/003_exact_audience.sql ==========================================================

-- Exact audiences: unique viewers and paying buyers as uniqExact states at every level.
--
-- `uniq` (001/002) is an estimator: on a public sample it gave 60,992 for 60,993 real viewers. A board
-- that is either exact or marked provisional cannot show an estimate, so the query layer reads these
-- tables instead; the uniq tables of 001/002 are left in place (and no longer fed) for stores that
-- ran before this migration.
--
-- Viewers come from viewers_in (distinct viewers per 10 s window, sent by the worker); buyers come from
-- the orders table (the first accepted occurrence of each paid order). Both are sets, so re-sending a
-- viewer or re-flushing an order after a crash changes nothing. Each table has both states; a view
-- fills one and leaves the other empty, and uniqExactMerge combines them.
DROP VIEW IF EXISTS streamproc.unique_viewers_10s_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.unique_viewers_1m_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.unique_viewers_1h_mv ON CLUSTER streamproc;

CREATE TABLE IF NOT EXISTS streamproc.audience_10s_local ON CLUSTER streamproc
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewers      AggregateFunction(uniqExact, String),
    buyers       AggregateFunction(uniqExact, String),
    seen_at      SimpleAggregateFunction(max, DateTime)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/audience_10s', '{replica}')
ORDER BY (window_start, streamer_id)
TTL seen_at + INTERVAL 6 HOUR;

CREATE TABLE IF NOT EXISTS streamproc.audience_10s ON CLUSTER streamproc AS streamproc.audience_10s_local
ENGINE = Distributed(streamproc, streamproc, audience_10s_local, cityHash64(streamer_id));

CREATE TABLE IF NOT EXISTS streamproc.audience_1m_local ON CLUSTER streamproc
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniqExact, String),
    buyers      AggregateFunction(uniqExact, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/audience_1m', '{replica}')
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS streamproc.audience_1m ON CLUSTER streamproc AS streamproc.audience_1m_local
ENGINE = Distributed(streamproc, streamproc, audience_1m_local, cityHash64(streamer_id));

CREATE TABLE IF NOT EXISTS streamproc.audience_1h_local ON CLUSTER streamproc
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniqExact, String),
    buyers      AggregateFunction(uniqExact, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/audience_1h', '{replica}')
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 400 DAY;

CREATE TABLE IF NOT EXISTS streamproc.audience_1h ON CLUSTER streamproc AS streamproc.audience_1h_local
ENGINE = Distributed(streamproc, streamproc, audience_1h_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_viewers_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1m_viewers_mv ON CLUSTER streamproc
TO streamproc.audience_1m_local AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1h_viewers_mv ON CLUSTER streamproc
TO streamproc.audience_1h_local AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_buyers_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM streamproc.orders_local WHERE status = 'paid' GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1m_buyers_mv ON CLUSTER streamproc
TO streamproc.audience_1m_local AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM streamproc.orders_local WHERE status = 'paid' GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1h_buyers_mv ON CLUSTER streamproc
TO streamproc.audience_1h_local AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM streamproc.orders_local WHERE status = 'paid' GROUP BY bucket, streamer_id;

-- Buyers of orders already in the store are exact from their facts; past viewers were only kept as
-- estimates, so unique viewers are exact from this migration on.
INSERT INTO streamproc.audience_10s (window_start, streamer_id, buyers, seen_at)
SELECT window_start, streamer_id, uniqExactState(viewer_id), now() FROM streamproc.orders FINAL WHERE status = 'paid'
GROUP BY window_start, streamer_id;

INSERT INTO streamproc.audience_1m (bucket, streamer_id, buyers, seen_at)
SELECT toStartOfMinute(window_start) AS b, streamer_id, uniqExactState(viewer_id), now() FROM streamproc.orders FINAL
WHERE status = 'paid' GROUP BY b, streamer_id;

INSERT INTO streamproc.audience_1h (bucket, streamer_id, buyers, seen_at)
SELECT toStartOfHour(window_start) AS b, streamer_id, uniqExactState(viewer_id), now() FROM streamproc.orders FINAL
WHERE status = 'paid' GROUP BY b, streamer_id;

-- ==== schemas/clickhouse/004_viewer_sets.sql =============================================================

-- A window's new viewers as one row with an array, instead of one row per viewer.
--
-- The worker already holds the viewers a window gained since the last flush as one set; sending them as
-- (window_start, streamer_id, viewer_ids) spares the flush a tuple per viewer, and at 95k events/s the
-- viewer rows were the largest part of a flush (26k-62k a second; docs/SCALING.md, "Where a flush's time
-- goes"). The views unfold the array into the same uniqExact states 003 keeps, so the audiences do not
-- change. viewers_in and its views stay for writers of the previous version during an upgrade.
CREATE TABLE IF NOT EXISTS streamproc.viewer_sets_in_local ON CLUSTER streamproc
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewer_ids   Array(String)
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS streamproc.viewer_sets_in ON CLUSTER streamproc AS streamproc.viewer_sets_in_local
ENGINE = Distributed(streamproc, streamproc, viewer_sets_in_local, cityHash64(streamer_id));

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_viewer_sets_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers, max(now()) AS seen_at
FROM streamproc.viewer_sets_in_local GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1m_viewer_sets_mv ON CLUSTER streamproc
TO streamproc.audience_1m_local AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers,
       max(now()) AS seen_at
FROM streamproc.viewer_sets_in_local GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_1h_viewer_sets_mv ON CLUSTER streamproc
TO streamproc.audience_1h_local AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers,
       max(now()) AS seen_at
FROM streamproc.viewer_sets_in_local GROUP BY bucket, streamer_id;

-- ==== schemas/clickhouse/005_audience_rollup.sql =========================================================

-- Audiences per minute and hour are rolled up by the rollup pass, not by views on every insert.
--
-- With views, each flush computed every viewer's and buyer's uniqExact state three times (10 s, minute,
-- hour) before its insert returned: at 95k events/s the minute and hour views were half of the store's
-- time per flush, and that time is what freshness waits for (docs/SCALING.md, "Where a flush's time
-- goes"). The rollup pass (boards/rollup.py) now unions the 10 s states written since its last pass
-- into audience_1m and audience_1h. States are sets, so rolling a state twice changes nothing, and readers
-- already take a minute or hour from a rolled level only once every write to it has been rolled
-- (docs/ARCHITECTURE.md, "Rollup completeness").
--
-- written_at says when a 10 s state was written: the pass reads the states newer than its cursor. Rows
-- written before this migration keep 0; the views being dropped below had already put them into the
-- minute and hour levels. The new 10 s views are created before the old ones are dropped, so an insert
-- running meanwhile is counted by one or both (a set again), never by neither.
ALTER TABLE streamproc.audience_10s_local ON CLUSTER streamproc ADD COLUMN IF NOT EXISTS written_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
    DEFAULT toDateTime64(0, 3, 'UTC');

ALTER TABLE streamproc.audience_10s ON CLUSTER streamproc ADD COLUMN IF NOT EXISTS written_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
    DEFAULT toDateTime64(0, 3, 'UTC');

ALTER TABLE streamproc.audience_10s_local ON CLUSTER streamproc ADD INDEX IF NOT EXISTS audience_10s_written_minmax written_at TYPE minmax GRANULARITY 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_viewers_in_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM streamproc.viewers_in_local GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_viewer_sets_in_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM streamproc.viewer_sets_in_local GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.audience_10s_orders_mv ON CLUSTER streamproc
TO streamproc.audience_10s_local AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM streamproc.orders_local WHERE status = 'paid' GROUP BY window_start, streamer_id;

DROP VIEW IF EXISTS streamproc.audience_10s_viewers_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_10s_viewer_sets_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_10s_buyers_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1m_viewers_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1m_viewer_sets_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1m_buyers_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1h_viewers_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1h_viewer_sets_mv ON CLUSTER streamproc;

DROP VIEW IF EXISTS streamproc.audience_1h_buyers_mv ON CLUSTER streamproc;

-- This file holds the migrations above: record them, so that workers do not apply them again.
INSERT INTO streamproc.schema_migrations (name) VALUES ('001_core.sql'), ('002_leaderboards.sql'), ('003_exact_audience.sql'), ('004_viewer_sets.sql'), ('005_audience_rollup.sql');
