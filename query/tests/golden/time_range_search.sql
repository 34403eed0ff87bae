-- A search within a time range, BETWEEN inclusive at both ends.
SELECT ts, job, instance, line
FROM logs
WHERE search(line, 'failed password invalid')
  AND ts BETWEEN '2026-11-21T07:10:00Z' AND '2026-11-21T07:14:00Z'
ORDER BY ts, job, instance, "offset"
