-- LIKE, ILIKE and regular expressions read every row; they agree with
-- search() where they mean the same.
SELECT 'LIKE %Invalid user%' AS filter, count(*) AS lines FROM logs WHERE line LIKE '%Invalid user%'
UNION ALL
SELECT 'ILIKE %invalid user%', count(*) FROM logs WHERE line ILIKE '%invalid user%'
UNION ALL
SELECT 'search "invalid user"', count(*) FROM logs WHERE search(line, '"invalid user"')
UNION ALL
SELECT 'regexp_like blk_-?[0-9]+ terminating$', count(*) FROM logs WHERE regexp_like(line, 'blk_-?[0-9]+ terminating$')
UNION ALL
SELECT '~ "(level|severity|lvl)":"error"', count(*) FROM logs WHERE line ~ '"(level|severity|lvl)":"error"'
UNION ALL
SELECT 'regexp_like (?i)exception', count(*) FROM logs WHERE regexp_like(line, '(?i)exception')
ORDER BY filter
