-- NOT search(…) is the complement of search(…), row by row (the indexes
-- answer only positive searches).
SELECT job,
       count(*) FILTER (WHERE search(line, 'info')) AS info,
       count(*) FILTER (WHERE NOT search(line, 'info')) AS not_info,
       count(*) AS lines
FROM logs
WHERE job LIKE 'web/%'
GROUP BY job
ORDER BY job
