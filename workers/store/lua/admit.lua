-- Admits many requests in one call: KEYS holds 8 keys per request (as above), ARGV 9 values per
-- request, in the same order; returns one verdict per request. Per request, ARGV: digest, queued
-- body, ttl_s, deadline ms ('' = none), scoped id, hand-off JSON ('' = none), now ms, tenant's most
-- in flight (0 = off), tenant's most stored result bytes (0 = off). A queued request's hand-off (its
-- Celery queue, priority and message item) is kept with it until it starts, so a message lost on
-- the way to a worker can be sent again (ADMIT/CLAIM_STALE). A new request over its tenant's limits
-- is not recorded: 'quota_inflight' or 'quota_bytes' (the caller answers it); the limits are checked
-- here so concurrent intakes and API replicas cannot overshoot them. The requests are admitted in
-- order, so one over a limit sees the ones before it in the same call.
local function admit_one(K, A)
  local cur = redis.call('HGET', K[1], 'digest')
  if not cur then
    local st = redis.call('HGET', K[1], 'status')
    if st then return 'terminal' end
    local now = tonumber(A[7])
    redis.call('ZREMRANGEBYSCORE', K[6], '-inf', now)
    if tonumber(A[8]) > 0 and redis.call('ZCARD', K[6]) >= tonumber(A[8]) then
      return 'quota_inflight'
    end
    if tonumber(A[9]) > 0 then
      prune_bytes(K[7], K[8], now)
      if tonumber(redis.call('HGET', K[8], '~total') or '0') >= tonumber(A[9]) then
        return 'quota_bytes'
      end
    end
    redis.call('HSET', K[1], 'status', 'queued', 'body', A[2], 'digest', A[1])
    redis.call('EXPIRE', K[1], A[3])
    -- already past its deadline: it is answered expired at once (or by the deadline sweep), so it
    -- never holds a place in flight (a backlog of them counted for a moment past the bound)
    local late = A[4] ~= '' and tonumber(A[4]) <= now
    if not late then
      local expiry = now + tonumber(A[3]) * 1000
      for _, k in ipairs({K[2], K[3], K[6]}) do
        redis.call('ZREMRANGEBYSCORE', k, '-inf', now)
        redis.call('ZADD', k, expiry, A[5])
        redis.call('EXPIRE', k, A[3])
      end
    end
    if A[4] ~= '' then redis.call('ZADD', K[4], A[4], A[5]) end
    if A[6] ~= '' and not late then
      redis.call('HSET', K[1], 'handoff', A[6])
      redis.call('ZADD', K[5], A[7], A[5])
    end
    return 'new'
  end
  if cur ~= A[1] then return 'conflict' end
  local st = redis.call('HGET', K[1], 'status')
  if st == 'queued' and A[6] ~= '' then
    redis.call('HSET', K[1], 'handoff', A[6])
    redis.call('ZADD', K[5], A[7], A[5])
  end
  if st == 'queued' or st == 'running' then return 'pending' end
  return 'terminal'
end

local verdicts = {}
for i = 0, #KEYS / 8 - 1 do
  verdicts[i + 1] = admit_one({unpack(KEYS, i * 8 + 1, i * 8 + 8)}, {unpack(ARGV, i * 9 + 1, i * 9 + 9)})
end
return verdicts
