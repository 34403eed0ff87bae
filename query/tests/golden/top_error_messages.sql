-- The most frequent error messages with their numbers masked (so the lines
-- of one message group together), per job.
SELECT job,
       regexp_replace(line, '[0-9]+', 'N', 'g') AS pattern,
       count(*) AS n
FROM logs
WHERE search(line, 'error OR exception')
GROUP BY job, pattern
ORDER BY n DESC, job, pattern
LIMIT 10
