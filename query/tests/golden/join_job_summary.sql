-- Per job: its events and its lines, jobs without lines or events included.
WITH ev AS (SELECT job, count(*) AS events FROM events WHERE job <> '' GROUP BY job),
     lg AS (SELECT job, count(*) AS lines, count(*) FILTER (WHERE search(line, 'error')) AS errors
            FROM logs GROUP BY job)
SELECT coalesce(ev.job, lg.job) AS job, coalesce(ev.events, 0) AS events,
       coalesce(lg.lines, 0) AS lines, coalesce(lg.errors, 0) AS errors
FROM ev FULL OUTER JOIN lg ON ev.job = lg.job
ORDER BY job
