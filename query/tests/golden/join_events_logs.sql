-- What an instance logged in the ten minutes before it failed or was killed.
SELECT e.kind, e.job, e.instance, e.reason, count(*) AS lines_before,
       min(l.ts) AS first, max(l.ts) AS last
FROM events e
JOIN logs l ON l.job = e.job AND l.instance = e.instance
WHERE e.kind IN ('quota_kill', 'task_state')
  AND e.reason NOT IN ('started')
  AND l.ts BETWEEN e.ts - INTERVAL '10 minutes' AND e.ts
GROUP BY e.kind, e.job, e.instance, e.reason
ORDER BY e.kind, e.job, e.instance, e.reason
