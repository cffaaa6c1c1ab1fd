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

DROP VIEW IF EXISTS unique_viewers_10s_mv;

DROP VIEW IF EXISTS unique_viewers_1m_mv;

DROP VIEW IF EXISTS unique_viewers_1h_mv;

CREATE TABLE IF NOT EXISTS audience_10s
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewers      AggregateFunction(uniqExact, String),
    buyers       AggregateFunction(uniqExact, String),
    seen_at      SimpleAggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree
ORDER BY (window_start, streamer_id)
TTL seen_at + INTERVAL 6 HOUR;

CREATE TABLE IF NOT EXISTS audience_1m
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniqExact, String),
    buyers      AggregateFunction(uniqExact, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 8 DAY;

CREATE TABLE IF NOT EXISTS audience_1h
(
    bucket      DateTime('UTC'),
    streamer_id String,
    viewers     AggregateFunction(uniqExact, String),
    buyers      AggregateFunction(uniqExact, String),
    seen_at     SimpleAggregateFunction(max, DateTime)
)
ENGINE = AggregatingMergeTree
ORDER BY (bucket, streamer_id)
TTL seen_at + INTERVAL 400 DAY;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_viewers_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM viewers_in GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1m_viewers_mv TO audience_1m AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM viewers_in GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1h_viewers_mv TO audience_1h AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at
FROM viewers_in GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_buyers_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM orders WHERE status = 'paid' GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1m_buyers_mv TO audience_1m AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM orders WHERE status = 'paid' GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1h_buyers_mv TO audience_1h AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at
FROM orders WHERE status = 'paid' GROUP BY bucket, streamer_id;

-- Buyers of orders already in the store are exact from their facts; past viewers were only kept as
-- estimates, so unique viewers are exact from this migration on.
INSERT INTO audience_10s (window_start, streamer_id, buyers, seen_at)
SELECT window_start, streamer_id, uniqExactState(viewer_id), now() FROM orders FINAL WHERE status = 'paid'
GROUP BY window_start, streamer_id;

INSERT INTO audience_1m (bucket, streamer_id, buyers, seen_at)
SELECT toStartOfMinute(window_start) AS b, streamer_id, uniqExactState(viewer_id), now() FROM orders FINAL
WHERE status = 'paid' GROUP BY b, streamer_id;

INSERT INTO audience_1h (bucket, streamer_id, buyers, seen_at)
SELECT toStartOfHour(window_start) AS b, streamer_id, uniqExactState(viewer_id), now() FROM orders FINAL
WHERE status = 'paid' GROUP BY b, streamer_id
