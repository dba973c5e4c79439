-- KEYS[1] pending; ARGV: cutoff ms, now ms, result key prefix, most to claim. Claims the queued
-- requests admitted before the cutoff (their Celery message may have been lost with a worker killed
-- as it took the message from Redis): each one's score becomes now, so another caller does not claim
-- it too, and its hand-off is returned to be sent again. Ids no longer queued leave the set.
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[4]))
local out = {}
for _, id in ipairs(due) do
  local key = ARGV[3] .. id
  local handoff = redis.call('HGET', key, 'handoff')
  if handoff and redis.call('HGET', key, 'status') == 'queued' then
    redis.call('ZADD', KEYS[1], ARGV[2], id)
    table.insert(out, handoff)
  else
    redis.call('ZREM', KEYS[1], id)
  end
end
return out
