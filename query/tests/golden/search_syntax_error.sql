-- A search query that does not parse says why.
SELECT count(*) FROM logs WHERE search(line, 'error AND')
