-- trimIndex: remove from a chat's index the IDs whose entry is gone
-- (evicted under maxmemory, or expired), each only if its entry still does
-- not exist: an entry stored again since the caller found it gone keeps its
-- ID.
-- KEYS[1] the chat's index (a sorted set of message IDs)
-- KEYS[2..n] the entries of the IDs ARGV[1..n-1], in order
-- Returns the number of IDs removed.
local removed = 0
for i = 2, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 0 then
    removed = removed + redis.call('ZREM', KEYS[1], ARGV[i - 1])
  end
end
return removed
