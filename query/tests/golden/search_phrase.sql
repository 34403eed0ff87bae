-- A phrase needs its tokens next to each other, in order, whatever is
-- between them ("user root" finds USER=root and /user/root/); words alone
-- only need to be in the line. The reversed phrase "user invalid" finds no
-- line, so it has no row.
SELECT 'phrase "invalid user admin"' AS query, job, count(*) AS lines
FROM logs WHERE search(line, '"invalid user admin"') GROUP BY job
UNION ALL
SELECT 'words root user', job, count(*)
FROM logs WHERE search(line, 'root user') GROUP BY job
UNION ALL
SELECT 'phrase "user invalid"', job, count(*)
FROM logs WHERE search(line, '"user invalid"') GROUP BY job
UNION ALL
SELECT 'phrase "user root"', job, count(*)
FROM logs WHERE search(line, '"user root"') GROUP BY job
UNION ALL
SELECT 'phrase "connection closed"', job, count(*)
FROM logs WHERE search(line, '"connection closed"') GROUP BY job
UNION ALL
SELECT 'word of several tokens code=exited', job, count(*)
FROM logs WHERE search(line, 'code=exited') GROUP BY job
ORDER BY query, job
