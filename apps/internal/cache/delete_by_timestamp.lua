-- deleteByTimestamp: remove an entry only if its version is not newer.
-- KEYS[1] the entry (a hash: v = version, d = the change's JSON)
-- KEYS[2] optional: the chat's index (a sorted set of message IDs)
-- ARGV[1] version, ARGV[2] the ID to remove from the index
-- Returns -1: no entry; 0: the stored version is newer (kept); 1: removed.
local cur = redis.call('HGET', KEYS[1], 'v')
if not cur then
  return -1
end
if tonumber(cur) > tonumber(ARGV[1]) then
  return 0
end
redis.call('DEL', KEYS[1])
if KEYS[2] then
  redis.call('ZREM', KEYS[2], ARGV[2])
end
return 1
