-- The engine runs read-only queries.
CREATE TABLE copy AS SELECT * FROM logs
