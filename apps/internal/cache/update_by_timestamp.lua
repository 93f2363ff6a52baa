-- updateByTimestamp: store a change only if its version is newer.
-- KEYS[1] the entry (a hash: v = version, d = the change's JSON)
-- KEYS[2] optional: the chat's index set of message IDs
-- ARGV[1] version, ARGV[2] JSON, ARGV[3] TTL in ms, ARGV[4] the ID to index
-- Returns -1: the entry was absent (stored now); 0: a newer or equal version
-- is stored (nothing changed); 1: an older version was replaced.
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
if KEYS[2] then
  redis.call('SADD', KEYS[2], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[3])
end
if cur then
  return 1
end
return -1
