-- Shoal schema, migration to version 4, SQLite dialect: sections that follow the load.
-- `home` is the owner that membership and capacity give a partition; `owner` may differ for a
-- while, when the partition is lent to a node with free slots. `moved_at` is when its owner last
-- changed (datastore time), for the load rule's hysteresis.
ALTER TABLE partitions ADD COLUMN home INTEGER REFERENCES nodes (id);
ALTER TABLE partitions ADD COLUMN moved_at REAL;
UPDATE partitions SET home = owner;
