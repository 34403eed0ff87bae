-- Lines per job, with the roles and instances they come from.
SELECT role, job, count(DISTINCT instance) AS instances, count(*) AS lines
FROM logs
GROUP BY role, job
ORDER BY role, job
