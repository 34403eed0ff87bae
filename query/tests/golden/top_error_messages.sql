-- The most frequent error messages with their timestamps cut off, per job.
SELECT job,
       regexp_replace(line, '^(\[[^]]*\] |[0-9][0-9:,./ -]* )', '') AS message,
       count(*) AS n
FROM logs
WHERE search(line, 'error OR exception')
GROUP BY job, message
ORDER BY n DESC, job, message
LIMIT 10
