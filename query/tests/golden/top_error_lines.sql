-- The ten most frequent error lines; ties in order of the line.
SELECT line, count(*) AS n
FROM logs
WHERE search(line, 'error')
GROUP BY line
ORDER BY n DESC, line
LIMIT 10
