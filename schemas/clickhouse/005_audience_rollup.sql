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

ALTER TABLE audience_10s ADD COLUMN IF NOT EXISTS written_at SimpleAggregateFunction(max, DateTime64(3, 'UTC'))
    DEFAULT toDateTime64(0, 3, 'UTC');

ALTER TABLE audience_10s ADD INDEX IF NOT EXISTS audience_10s_written_minmax written_at TYPE minmax GRANULARITY 1;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_viewers_in_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS viewers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM viewers_in GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_viewer_sets_in_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM viewer_sets_in GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_orders_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(viewer_id) AS buyers, max(now()) AS seen_at,
       max(now64(3, 'UTC')) AS written_at
FROM orders WHERE status = 'paid' GROUP BY window_start, streamer_id;

DROP VIEW IF EXISTS audience_10s_viewers_mv;

DROP VIEW IF EXISTS audience_10s_viewer_sets_mv;

DROP VIEW IF EXISTS audience_10s_buyers_mv;

DROP VIEW IF EXISTS audience_1m_viewers_mv;

DROP VIEW IF EXISTS audience_1m_viewer_sets_mv;

DROP VIEW IF EXISTS audience_1m_buyers_mv;

DROP VIEW IF EXISTS audience_1h_viewers_mv;

DROP VIEW IF EXISTS audience_1h_viewer_sets_mv;

DROP VIEW IF EXISTS audience_1h_buyers_mv
