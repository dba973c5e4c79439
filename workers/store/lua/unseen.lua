-- KEYS[1] unseen (sorted set of result keys), KEYS[2] unseen wire (hash); ARGV: cutoff ms, most to
-- return. The API's hand-offs to Kafka that no intake has read since before the cutoff, as a flat
-- list of result key, wire JSON; entries whose request is no longer queued (ended, or forgotten
-- because Kafka refused it) leave the set.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[2]))
local out = {}
for _, key in ipairs(due) do
  local wire = redis.call('HGET', KEYS[2], key)
  if wire and redis.call('HGET', key, 'status') == 'queued' then
    table.insert(out, key)
    table.insert(out, wire)
  else
    redis.call('ZREM', KEYS[1], key)
    redis.call('HDEL', KEYS[2], key)
  end
end
return out
