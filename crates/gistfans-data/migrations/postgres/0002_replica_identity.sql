-- The change stream (hpdb::changes, issue 21) maps a deleted row to cache
-- tags by columns other than its key: a deleted star names its post and its
-- user, a deleted follow both users, a deleted post its author. PostgreSQL
-- logs only the key of a deleted row unless the table's replica identity
-- is FULL.
ALTER TABLE stars REPLICA IDENTITY FULL;
ALTER TABLE follows REPLICA IDENTITY FULL;
ALTER TABLE posts REPLICA IDENTITY FULL;
