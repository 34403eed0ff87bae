-- A search within a time range, BETWEEN inclusive at both ends.
SELECT ts, job, instance, line
FROM logs
WHERE search(line, 'failed password root')
  AND ts BETWEEN '2026-11-21T07:10:00Z' AND '2026-11-21T07:12:00Z'
ORDER BY ts, job, instance, "offset"
