-- One job's events in order, with their attributes.
SELECT ts, id, kind, instance, run, host, actor, reason, attributes
FROM events
WHERE job = 'batch/dev/spark'
ORDER BY ts, id
