-- updateByTimestamp: store a change only if its version is newer.
-- KEYS[1] the entry (a hash: v = version, d = the change's JSON)
-- KEYS[2] optional: the chat's index, a sorted set of message IDs scored by
--         the time (ms, Redis's clock) their entry expires
-- ARGV[1] version, ARGV[2] JSON, ARGV[3] TTL in ms, ARGV[4] the ID to index
-- Returns -1: the entry was absent (stored now); 0: a newer or equal version
-- is stored (nothing changed); 1: an older version was replaced.
-- Each write of an indexed entry also trims the index of the IDs whose entry
-- has expired by now (an evicted entry's ID leaves at its expiry at the
-- latest, or earlier when a read finds it gone: trim_index.lua).
local cur = redis.call('HGET', KEYS[1], 'v')
if cur and tonumber(cur) >= tonumber(ARGV[1]) then
  return 0
end
local ttl = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'v', ARGV[1], 'd', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ttl)
if KEYS[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now)
  redis.call('ZADD', KEYS[2], now + ttl, ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if cur then
  return 1
end
return -1
