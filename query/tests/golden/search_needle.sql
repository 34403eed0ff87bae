-- A block id the corpus planted in two lines (a needle): the split indexes
-- select the two lines that hold it.
SELECT ts, job, instance, "offset", line
FROM logs
WHERE search(line, 'blk_-1340178610022372498')
ORDER BY ts, job, instance, "offset"
