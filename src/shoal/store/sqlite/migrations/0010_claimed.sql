-- Shoal schema, migration to version 10, SQLite dialect: jobs claimed ahead are not started.
-- A node claims a few jobs beyond its free slots so its workers never wait on a claim. Such a
-- job is `claimed`: held by its node (`claimer`) but charged no attempt and stamped with no
-- start until a worker takes it and the node records the start (claimed -> running). If its
-- node dies or gives it back, it returns to the queue as it was.
CREATE INDEX jobs_claimed ON jobs (claimer, id) WHERE state = 'claimed';
