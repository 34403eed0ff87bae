-- search() under an OR or in the SELECT list is evaluated row by row, with
-- the same answers as in a WHERE conjunct.
SELECT job,
       search(line, 'error') AS has_error,
       count(*) AS lines
FROM logs
WHERE search(line, 'error') OR line LIKE '%WARN%'
GROUP BY job, search(line, 'error')
ORDER BY job, has_error
