-- Admits many requests in one call, in order; returns one verdict per request. KEYS: [1] requests
-- in flight (all models), [2] the deadlines sorted set, [3] the pending sorted set, then each
-- distinct model's in-flight set and each distinct tenant's three keys (in flight, stored bytes,
-- sizes: consecutive), then the requests' result hashes, one per request, last. ARGV[1]: one JSON
-- document {"now": ms, "ttl_s": s, "requests": [[digest, queued body, deadline ms ('' = none),
-- scoped id, hand-off JSON ('' = none), tenant's most in flight (0 = off), tenant's most stored
-- result bytes (0 = off), index of the tenant's first key, index of the model's in-flight key,
-- the model version the hand-off goes to ('' = the model's default queue), delivery targets JSON
-- ('' = none: kept as the hash's 'deliver' field, read when it ends)]]}
-- (numbers that reach Redis as text are sent as text, so no precision is lost). A queued request's
-- hand-off (its Celery queue, priority and message item) is kept with it until it starts, so a
-- message lost on the way to a worker can be sent again (ADMIT/CLAIM_STALE). A new request over its
-- tenant's limits is not recorded: 'quota_inflight' or 'quota_bytes' (the caller answers it); the
-- limits are checked here so concurrent intakes and API replicas cannot overshoot them. The
-- requests are admitted in order, so one over a limit sees the ones before it in the same call.
--
-- Housekeeping is done once per distinct key per call, not per request: lapsed members of an
-- in-flight set are dropped the first time the call touches it (every request of a call has the
-- same 'now', and a member added here lapses after it), the sets' EXPIRE is set once at the end,
-- and the additions to the shared sorted sets (in flight, per model, deadlines, pending) are sent
-- as one ZADD per key. A tenant's in-flight set is added to at once where it has an in-flight limit,
-- so its quota check stays exact. With a hand-off, the version it goes to is kept as 'route' for the
-- life of the result (the version routing chose at admission; the rollout drill checks it).
-- Inside, K holds a request's keys in the order the scripts share (workers/store/scripts.py) and A
-- its values: digest, queued body, ttl_s, deadline, scoped id, hand-off, now, the two limits, the
-- route, the delivery targets.
local pruned, clean_bytes, adds, ttls = {}, {}, {}, {}

local function prune(key, now)
  if not pruned[key] then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now)
    pruned[key] = true
  end
end

local function add_later(key, score, member)
  local a = adds[key]
  if not a then a = {}; adds[key] = a end
  a[#a + 1] = score
  a[#a + 1] = member
end

local function over_quota(K, A, now)
  prune(K[6], now)
  if tonumber(A[8]) > 0 and redis.call('ZCARD', K[6]) >= tonumber(A[8]) then
    return 'quota_inflight'
  end
  if tonumber(A[9]) > 0 then
    -- a prune that found fewer lapsed than its limit left none for this 'now'
    if not clean_bytes[K[7]] and prune_bytes(K[7], K[8], now) < 200 then clean_bytes[K[7]] = true end
    if tonumber(redis.call('HGET', K[8], '~total') or '0') >= tonumber(A[9]) then
      return 'quota_bytes'
    end
  end
  return nil
end

local function admit_new(K, A)
  local now = tonumber(A[7])
  local refused = over_quota(K, A, now)
  if refused then return refused end
  -- already past its deadline: it is answered expired at once (or by the deadline sweep), so it
  -- never holds a place in flight (a backlog of them counted for a moment past the bound)
  local late = A[4] ~= '' and tonumber(A[4]) <= now
  if A[6] ~= '' and not late then
    redis.call('HSET', K[1], 'status', 'queued', 'body', A[2], 'digest', A[1], 'handoff', A[6], 'route', A[10])
    add_later(K[5], A[7], A[5])
  else
    redis.call('HSET', K[1], 'status', 'queued', 'body', A[2], 'digest', A[1])
  end
  if A[11] ~= '' then redis.call('HSET', K[1], 'deliver', A[11]) end
  redis.call('EXPIRE', K[1], A[3])
  if not late then
    local expiry = now + tonumber(A[3]) * 1000
    if tonumber(A[8]) > 0 then  -- counted by the next request's quota check: added at once
      redis.call('ZADD', K[6], expiry, A[5])
    else
      add_later(K[6], expiry, A[5])
    end
    ttls[K[6]] = A[3]
    for _, k in ipairs({K[2], K[3]}) do
      prune(k, now)
      add_later(k, expiry, A[5])
      ttls[k] = A[3]
    end
  end
  if A[4] ~= '' then add_later(K[4], A[4], A[5]) end
  return 'new'
end

local function admit_one(K, A)
  local known = redis.call('HMGET', K[1], 'digest', 'status')
  local cur, st = known[1], known[2]
  if not cur then
    if st then return 'terminal' end
    return admit_new(K, A)
  end
  if cur ~= A[1] then return 'conflict' end
  if st == 'queued' and A[6] ~= '' then
    -- a hand-off kept already (a record read again) stays: its version is where the request went
    redis.call('HSETNX', K[1], 'handoff', A[6])
    redis.call('HSETNX', K[1], 'route', A[10])
    add_later(K[5], A[7], A[5])
  end
  if st == 'queued' or st == 'running' then return 'pending' end
  return 'terminal'
end

local call = cjson.decode(ARGV[1])
local requests, now, ttl = call['requests'], call['now'], call['ttl_s']
local first_result = #KEYS - #requests
local verdicts = {}
for i, r in ipairs(requests) do
  local K = {KEYS[first_result + i], KEYS[1], KEYS[r[9]], KEYS[2], KEYS[3], KEYS[r[8]], KEYS[r[8] + 1], KEYS[r[8] + 2]}
  verdicts[i] = admit_one(K, {r[1], r[2], ttl, r[3], r[4], r[5], now, r[6], r[7], r[10] or '', r[11] or ''})
end
for key, a in pairs(adds) do redis.call('ZADD', key, unpack(a)) end
for key, ttl in pairs(ttls) do redis.call('EXPIRE', key, ttl) end
return verdicts
