-- A rare block id: the split indexes select the two lines that hold it.
SELECT ts, job, instance, "offset", line
FROM logs
WHERE search(line, 'blk_-8775602795571523802')
ORDER BY ts, job, instance, "offset"
