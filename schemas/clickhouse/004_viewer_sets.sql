-- A window's new viewers as one row with an array, instead of one row per viewer.
--
-- The worker already holds the viewers a window gained since the last flush as one set; sending them as
-- (window_start, streamer_id, viewer_ids) spares the flush a tuple per viewer, and at 95k events/s the
-- viewer rows were the largest part of a flush (26k-62k a second; docs/SCALING.md, "Where a flush's time
-- goes"). The views unfold the array into the same uniqExact states 003 keeps, so the audiences do not
-- change. viewers_in and its views stay for writers of the previous version during an upgrade.

CREATE TABLE IF NOT EXISTS viewer_sets_in
(
    window_start DateTime64(3, 'UTC'),
    streamer_id  String,
    viewer_ids   Array(String)
)
ENGINE = Null;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_10s_viewer_sets_mv TO audience_10s AS
SELECT window_start, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers, max(now()) AS seen_at
FROM viewer_sets_in GROUP BY window_start, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1m_viewer_sets_mv TO audience_1m AS
SELECT toStartOfMinute(window_start) AS bucket, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers,
       max(now()) AS seen_at
FROM viewer_sets_in GROUP BY bucket, streamer_id;

CREATE MATERIALIZED VIEW IF NOT EXISTS audience_1h_viewer_sets_mv TO audience_1h AS
SELECT toStartOfHour(window_start) AS bucket, streamer_id, uniqExactState(arrayJoin(viewer_ids)) AS viewers,
       max(now()) AS seen_at
FROM viewer_sets_in GROUP BY bucket, streamer_id
