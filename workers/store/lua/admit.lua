-- KEYS[1..8] as above; ARGV: digest, queued body, ttl_s, deadline ms ('' = none), scoped id,
-- hand-off JSON ('' = none), now ms, tenant's most in flight (0 = off), tenant's most stored result
-- bytes (0 = off). A queued request's hand-off (its Celery queue, priority and message item) is kept
-- with it until it starts, so a message lost on the way to a worker can be sent again
-- (ADMIT/CLAIM_STALE). A new request over its tenant's limits is not recorded: 'quota_inflight' or
-- 'quota_bytes' (the caller answers it); the limits are checked here so concurrent intakes and API
-- replicas cannot overshoot them.
local cur = redis.call('HGET', KEYS[1], 'digest')
if not cur then
  local st = redis.call('HGET', KEYS[1], 'status')
  if st then return 'terminal' end
  local now = tonumber(ARGV[7])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], '-inf', now)
  if tonumber(ARGV[8]) > 0 and redis.call('ZCARD', KEYS[6]) >= tonumber(ARGV[8]) then
    return 'quota_inflight'
  end
  if tonumber(ARGV[9]) > 0 then
    prune_bytes(KEYS[7], KEYS[8], now)
    if tonumber(redis.call('HGET', KEYS[8], '~total') or '0') >= tonumber(ARGV[9]) then
      return 'quota_bytes'
    end
  end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'body', ARGV[2], 'digest', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  -- already past its deadline: it is answered expired at once (or by the deadline sweep), so it
  -- never holds a place in flight (a backlog of them counted for a moment past the bound)
  local late = ARGV[4] ~= '' and tonumber(ARGV[4]) <= now
  if not late then
    local expiry = now + tonumber(ARGV[3]) * 1000
    for _, k in ipairs({KEYS[2], KEYS[3], KEYS[6]}) do
      redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
      redis.call('ZADD', k, expiry, ARGV[5])
      redis.call('EXPIRE', k, ARGV[3])
    end
  end
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) end
  if ARGV[6] ~= '' and not late then
    redis.call('HSET', KEYS[1], 'handoff', ARGV[6])
    redis.call('ZADD', KEYS[5], ARGV[7], ARGV[5])
  end
  return 'new'
end
if cur ~= ARGV[1] then return 'conflict' end
local st = redis.call('HGET', KEYS[1], 'status')
if st == 'queued' and ARGV[6] ~= '' then
  redis.call('HSET', KEYS[1], 'handoff', ARGV[6])
  redis.call('ZADD', KEYS[5], ARGV[7], ARGV[5])
end
if st == 'queued' or st == 'running' then return 'pending' end
return 'terminal'
