-- Lines of half an hour, per job, with their first and last times.
SELECT job, count(*) AS lines, min(ts) AS first, max(ts) AS last
FROM logs
WHERE ts >= '2026-11-21T08:00:00Z' AND ts < '2026-11-21T08:30:00Z'
GROUP BY job
ORDER BY job
