-- Shoal schema, migration 13, PostgreSQL dialect: the queued jobs of each partition by task.
-- A claim walks the head of each partition of its section (jobs_queued_partition), reading past
-- the queued jobs it cannot take. A backlog of such jobs (of a task the node lacks, or whose
-- limits leave no room) made every claim read through all of it: with 80,000 of them a claim
-- took 150 ms instead of about one. While such a backlog waits, claims find their candidates
-- task by task through this index instead, reading only jobs they can take.
CREATE INDEX jobs_queued_task ON jobs (partition, task, priority DESC, id) WHERE state = 'queued';
