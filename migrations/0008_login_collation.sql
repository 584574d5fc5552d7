-- A login's mappings are looked up by session_user, a name, which is
-- collated "C". Compared with a key in the database's collation, the
-- comparison had no collation the key is sorted by, so no index answered
-- it: the identity check read every login's mapping of an agent, or every
-- mapping there was. Role names compare byte by byte anyway. Collated "C",
-- the key answers session_user directly, and a text argument (in the
-- database's default collation) still combines with it.
ALTER TABLE backstop.agent_logins ALTER COLUMN login TYPE text COLLATE "C";
