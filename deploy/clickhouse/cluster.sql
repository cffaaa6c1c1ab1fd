-- streamproc on a ClickHouse cluster: replicated local tables on every shard, Distributed tables over them.
--
-- Stands in for the numbered migrations schemas/clickhouse/001_core.sql and 002_leaderboards.sql on a
-- cluster (same table names, same columns); run it once with clickhouse-client before the first worker
-- starts:   clickhouse-client --host <any node> --multiquery < deploy/clickhouse/cluster.sql
-- It marks those two migrations applied, so a worker's `schema apply` skips them. A later migration is
-- applied to the cluster by hand in this form (ON CLUSTER, *_local + Distributed) and recorded the same way.
--
-- Assumes a cluster named `streamproc` in remote_servers, Keeper, and the macros {shard} and {replica}
-- ({replica} unique per node, e.g. its host name). docs/SCALING.md says how many shards and why.
--
-- Sharding is by SOURCE PARTITION (src_topic, src_partition) for everything the worker restores from:
-- every snapshot version of a window row, its checkpoint and its order ids then live on one shard, so
-- ReplacingMergeTree / FINAL deduplicate correctly per shard and a restore reads one shard's data.
-- Leaderboards sum a streamer's rows over source partitions, which a Distributed query does across
-- shards. Unique-viewer states are sharded by streamer; uniqMerge combines states from any shards.

CREATE DATABASE IF NOT EXISTS streamproc ON CLUSTER streamproc;

-- What the worker's user needs from a cluster (attach with: ALTER USER streamproc SETTINGS PROFILE
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

-- ---- 10 s tallies: snapshots per (window, streamer, source partition) -------------------------------

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

-- ---- unique viewers: Null input, uniq states per window, minute and hour --------------------------

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
    viewers      AggregateFunction(uniq, String),
    seen_at      SimpleAggregateFunction(max, DateTime) DEFAULT now()
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/unique_viewers_10s', '{replica}')
ORDER BY (window_start, streamer_id)
TTL seen_at + INTERVAL 6 HOUR;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_10s_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_10s_local AS
SELECT window_start, streamer_id, uniqState(viewer_id) AS viewers
FROM streamproc.viewers_in_local
GROUP BY window_start, streamer_id;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_10s ON CLUSTER streamproc AS streamproc.unique_viewers_10s_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_10s_local, cityHash64(streamer_id));

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

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_1m_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_1m_local AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local
GROUP BY bucket, streamer_id;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1m ON CLUSTER streamproc AS streamproc.unique_viewers_1m_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_1m_local, cityHash64(streamer_id));

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

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.unique_viewers_1h_mv ON CLUSTER streamproc
TO streamproc.unique_viewers_1h_local AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqState(viewer_id) AS viewers, max(now()) AS seen_at
FROM streamproc.viewers_in_local
GROUP BY bucket, streamer_id;

CREATE TABLE IF NOT EXISTS streamproc.unique_viewers_1h ON CLUSTER streamproc AS streamproc.unique_viewers_1h_local
ENGINE = Distributed(streamproc, streamproc, unique_viewers_1h_local, cityHash64(streamer_id));

-- ---- orders and checkpoints: restored per source partition ----------------------------------------

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
    amount_fen    Int64,
    INDEX orders_ts_minmax ts TYPE minmax GRANULARITY 1
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/{shard}/streamproc/orders', '{replica}')
ORDER BY (src_topic, src_partition, src_offset, src_index);

CREATE TABLE IF NOT EXISTS streamproc.orders ON CLUSTER streamproc AS streamproc.orders_local
ENGINE = Distributed(streamproc, streamproc, orders_local, cityHash64(src_topic, src_partition));

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

-- ---- rollups to minutes and hours (recomputed by the rollup job from tallies_10s FINAL) -----------

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

-- Marks are written on the shard that received the tallies; the job reads them all through rollup_marks.
CREATE TABLE IF NOT EXISTS streamproc.rollup_marks_local ON CLUSTER streamproc
(
    marked_at   DateTime64(3, 'UTC'),
    minute      DateTime('UTC'),
    streamer_id String
)
ENGINE = ReplicatedMergeTree('/clickhouse/tables/{shard}/streamproc/rollup_marks', '{replica}')
ORDER BY (marked_at, minute, streamer_id)
TTL toDateTime(marked_at) + INTERVAL 2 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.rollup_marks_mv ON CLUSTER streamproc
TO streamproc.rollup_marks_local AS
SELECT now64(3) AS marked_at, toStartOfMinute(window_start) AS minute, streamer_id
FROM streamproc.tallies_10s_local
GROUP BY minute, streamer_id;

CREATE TABLE IF NOT EXISTS streamproc.rollup_marks ON CLUSTER streamproc AS streamproc.rollup_marks_local
ENGINE = Distributed(streamproc, streamproc, rollup_marks_local, cityHash64(streamer_id));

CREATE TABLE IF NOT EXISTS streamproc.tallies_clock_local ON CLUSTER streamproc
(
    k              UInt8,
    newest_window  SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_event   SimpleAggregateFunction(max, DateTime64(3, 'UTC')),
    newest_flush   SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
)
ENGINE = ReplicatedAggregatingMergeTree('/clickhouse/tables/{shard}/streamproc/tallies_clock', '{replica}')
ORDER BY k;

CREATE MATERIALIZED VIEW IF NOT EXISTS streamproc.tallies_clock_mv ON CLUSTER streamproc
TO streamproc.tallies_clock_local AS
SELECT toUInt8(0) AS k, max(window_start) AS newest_window, max(max_ts) AS newest_event, now64(3) AS newest_flush
FROM streamproc.tallies_10s_local;

-- Readers take max() over it, so one row per shard is fine.
CREATE TABLE IF NOT EXISTS streamproc.tallies_clock ON CLUSTER streamproc AS streamproc.tallies_clock_local
ENGINE = Distributed(streamproc, streamproc, tallies_clock_local, rand());

-- ---- small tables kept whole on every node (one Keeper path for the whole cluster) ----------------

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

CREATE TABLE IF NOT EXISTS streamproc.schema_migrations ON CLUSTER streamproc
(
    name       String,
    applied_at DateTime DEFAULT now()
)
ENGINE = ReplicatedReplacingMergeTree('/clickhouse/tables/all/streamproc/schema_migrations', '{replica}')
ORDER BY name;

-- This file is migrations 001 and 002 for the cluster: record them, so workers do not apply them again.
INSERT INTO streamproc.schema_migrations (name) VALUES ('001_core.sql'), ('002_leaderboards.sql');
