-- Core tables: per-source-partition window snapshots, unique viewers, order facts, checkpoints.
-- Applied in order by `streamproc schema apply`; every statement is idempotent.

-- One row per (10 s window, streamer, source partition). The worker re-flushes the whole snapshot of
-- a window whenever it changes; `version` is the source partition's last applied offset at that flush,
-- so the highest version is always the complete aggregate of a prefix of the partition's log.
CREATE TABLE IF NOT EXISTS tallies_10s
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
ENGINE = ReplacingMergeTree(version)
ORDER BY (window_start, streamer_id, src_topic, src_partition)
TTL toDateTime(flushed_at) + INTERVAL 6 HOUR;

-- Distinct viewers per window go through a Null table; the materialized view keeps a mergeable
-- uniq state, so unique viewers over any range is uniqMerge (summing counts could not give it).
CREATE TABLE IF NOT EXISTS viewers_in
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewer_id    String
)
ENGINE = Null;

CREATE TABLE IF NOT EXISTS unique_viewers_10s
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewers      AggregateFunction(uniq, String)
)
ENGINE = AggregatingMergeTree
ORDER BY (window_start, streamer_id);

CREATE MATERIALIZED VIEW IF NOT EXISTS unique_viewers_10s_mv TO unique_viewers_10s AS
SELECT window_start, streamer_id, uniqState(viewer_id) AS viewers
FROM viewers_in
GROUP BY window_start, streamer_id;

-- The first accepted occurrence of each (order_id, status). Keyed by its source offset (and index
-- within a pack of events), so a re-flush after a crash rewrites the same row; restore reads it back
-- to rebuild order dedupe.
CREATE TABLE IF NOT EXISTS orders
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
ENGINE = ReplacingMergeTree
ORDER BY (src_topic, src_partition, src_offset, src_index);

-- Last applied offset per source partition, written after the rows of each flush.
CREATE TABLE IF NOT EXISTS checkpoints
(
    src_topic     LowCardinality(String),
    src_partition UInt16,
    last_offset   UInt64,
    updated_at    DateTime64(3, 'UTC') DEFAULT now64(3)
)
ENGINE = ReplacingMergeTree(last_offset)
ORDER BY (src_topic, src_partition);

-- The streamers dimension: where a room broadcasts from and what it sells.
CREATE TABLE IF NOT EXISTS streamers
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
ENGINE = ReplacingMergeTree(updated_at)
ORDER BY streamer_id;
