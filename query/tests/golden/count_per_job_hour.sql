-- Lines per job and hour.
SELECT job, date_trunc('hour', ts) AS hour, count(*) AS lines
FROM logs
GROUP BY job, date_trunc('hour', ts)
ORDER BY job, hour
