-- AND, OR, NOT and parentheses, per job.
SELECT 'error AND NOT kex' AS query, job, count(*) AS lines
FROM logs WHERE search(line, 'error AND NOT kex') GROUP BY job
UNION ALL
SELECT 'exception OR warn', job, count(*)
FROM logs WHERE search(line, 'exception OR warn') GROUP BY job
UNION ALL
SELECT '(failed OR invalid) AND NOT root', job, count(*)
FROM logs WHERE search(line, '(failed OR invalid) AND NOT root') GROUP BY job
UNION ALL
SELECT 'two searches: deleting, block', job, count(*)
FROM logs WHERE search(line, 'deleting') AND search(line, 'block') GROUP BY job
ORDER BY query, job
