-- Shoal schema, migration to version 11, SQLite dialect: the queued jobs of each task in claim order.
-- A claim walks the queued jobs in claim order (jobs_queued_priority), reading past those it
-- cannot take. A backlog of such jobs (of a task the node lacks, or whose limits leave no room)
-- made every claim read through all of it. While such a backlog waits, a claim picks each of
-- its tasks through this index instead, reading only jobs it can take.
CREATE INDEX jobs_queued_task ON jobs (task, priority DESC, id) WHERE state = 'queued';
