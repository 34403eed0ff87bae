-- search() ignores case; AND, OR and NOT are operators only in upper case.
SELECT job,
       count(*) FILTER (WHERE search(line, 'error')) AS "error",
       count(*) FILTER (WHERE search(line, 'ERROR')) AS "ERROR",
       count(*) FILTER (WHERE search(line, 'Error')) AS "Error",
       count(*) FILTER (WHERE search(line, 'error not')) AS "error not",
       count(*) FILTER (WHERE search(line, 'error NOT not')) AS "error NOT not"
FROM logs
GROUP BY job
ORDER BY job
