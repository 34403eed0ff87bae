-- A word no line holds: every split's index says so and none is read.
SELECT count(*) AS lines, count(DISTINCT job) AS jobs, min(ts) AS first
FROM logs
WHERE search(line, 'zzyzx')
