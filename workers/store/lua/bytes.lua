-- Helpers the store prepends to ADMIT, ADVANCE, CANCEL and EXPIRE_DUE. ``keep_bytes`` records the
-- size of a stored result for its tenant (its score: when it expires); ``prune_bytes`` forgets
-- expired ones (a few hundred per call: an overstated total is conservative) and says how many. '~total' cannot be a
-- scoped id.
local function keep_bytes(zkey, hkey, sid, size, now, life_ms)
  local old = tonumber(redis.call('HGET', hkey, sid) or '0')
  redis.call('HSET', hkey, sid, size)
  redis.call('HINCRBY', hkey, '~total', size - old)
  redis.call('ZADD', zkey, now + life_ms, sid)
  local ttl = math.max(1, math.ceil(life_ms / 1000))
  if redis.call('TTL', zkey) < ttl then
    redis.call('EXPIRE', zkey, ttl)
    redis.call('EXPIRE', hkey, ttl)
  end
end
local function prune_bytes(zkey, hkey, now)
  local gone = redis.call('ZRANGEBYSCORE', zkey, '-inf', now, 'LIMIT', 0, 200)
  for _, sid in ipairs(gone) do
    redis.call('HINCRBY', hkey, '~total', -tonumber(redis.call('HGET', hkey, sid) or '0'))
    redis.call('HDEL', hkey, sid)
    redis.call('ZREM', zkey, sid)
  end
  return #gone
end
local function text_or_empty(v)
  if type(v) == 'string' then return v end
  return ''
end
-- A result just made terminal goes to the outbox when its record names delivery targets
-- ('deliver'); a full outbox (ARGV's most entries) refuses it and counts the refusal instead. It is
-- called by the script that wrote the terminal status, once per result (a terminal status is never
-- written again), so each terminal result has at most one entry. redis.pcall: the outbox never
-- fails the result write.
local function outbox_add(rkey, sid, outbox, refused, most)
  if redis.call('HEXISTS', rkey, 'deliver') == 0 then return end
  local n = redis.pcall('XLEN', outbox)
  if type(n) == 'number' and n >= most then
    redis.pcall('INCR', refused)
  else
    redis.pcall('XADD', outbox, '*', 'id', sid)
  end
end
