-- NOT search(…) in WHERE, next to a search the indexes answer.
SELECT job, instance, count(*) AS lines
FROM logs
WHERE search(line, 'connection') AND NOT search(line, 'warn')
GROUP BY job, instance
ORDER BY job, instance
