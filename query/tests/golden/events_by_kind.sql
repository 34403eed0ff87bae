-- Events by kind: how many, of how many jobs, by whom.
SELECT kind, count(*) AS events, count(DISTINCT job) AS jobs,
       string_agg(DISTINCT actor, ',' ORDER BY actor) AS actors
FROM events
GROUP BY kind
ORDER BY kind
