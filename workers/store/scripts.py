"""The result store's Lua scripts: every transition of a request's record, atomic on the server.

Each script documents its KEYS and ARGV. Shared KEYS (where a script takes them): [1] the
request's result hash, [2] requests in flight (all models), [3] in flight for the request's model,
[4] the deadlines sorted set, [5] the pending sorted set (queued requests by admission time),
[6] the tenant's requests in flight, [7] and [8] the tenant's stored result bytes (sorted set by
expiry, sizes hash). Members are scoped ids (``<tenant>~<request id>``, :func:`schemas.naming.scoped_id`).
The in-flight sets score each id by when its result hash expires, so an id whose result expired
while queued stops counting by itself; terminal transitions remove it (idempotent: no count leaks).
"""

# Helpers the store prepends to ADMIT, ADVANCE, CANCEL and EXPIRE_DUE. ``keep_bytes`` records the
# size of a stored result for its tenant (its score: when it expires); ``prune_bytes`` forgets
# expired ones (a few hundred per call: an overstated total is conservative). '~total' cannot be a
# scoped id.
BYTES = """
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
end
local function text_or_empty(v)
  if type(v) == 'string' then return v end
  return ''
end
"""

# KEYS[1..8] as above; ARGV: digest, queued body, ttl_s, deadline ms ('' = none), scoped id,
# hand-off JSON ('' = none), now ms, tenant's most in flight (0 = off), tenant's most stored result
# bytes (0 = off). A queued request's hand-off (its Celery queue, priority and message item) is kept
# with it until it starts, so a message lost on the way to a worker can be sent again
# (ADMIT/CLAIM_STALE). A new request over its tenant's limits is not recorded: 'quota_inflight' or
# 'quota_bytes' (the caller answers it); the limits are checked here so concurrent intakes and API
# replicas cannot overshoot them.
ADMIT = """
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
"""

# KEYS[1..8] as above; ARGV: status, body, ttl_s, only_if_absent (0|1), done channel, scoped id,
# now ms, keep the tenant's stored bytes (0|1). Returns 0 when refused; when written, the
# request's attempt count for ``running`` (each start counts one: a start after a worker died
# mid-batch is a retry), else 1.
ADVANCE = """
local rank = {queued=0, running=1, done=2, failed=2, expired=2, cancelled=2}
local st = redis.call('HGET', KEYS[1], 'status')
if st then
  if ARGV[4] == '1' then return 0 end
  if rank[st] >= 2 then return 0 end
  if rank[ARGV[1]] < rank[st] then return 0 end
end
redis.call('HSET', KEYS[1], 'status', ARGV[1], 'body', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
local expiry = tonumber(ARGV[7]) + tonumber(ARGV[3]) * 1000
if ARGV[1] ~= 'queued' then
  redis.call('ZREM', KEYS[5], ARGV[6])
  redis.call('HDEL', KEYS[1], 'handoff')
end
if rank[ARGV[1]] >= 2 then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  redis.call('ZREM', KEYS[4], ARGV[6])
  redis.call('ZREM', KEYS[2], ARGV[6])
  redis.call('ZREM', KEYS[3], ARGV[6])
  redis.call('ZREM', KEYS[6], ARGV[6])
  if ARGV[8] == '1' then
    keep_bytes(KEYS[7], KEYS[8], ARGV[6], #ARGV[2], tonumber(ARGV[7]), tonumber(ARGV[3]) * 1000)
  end
else  -- its hash now lives ttl_s longer: so does its place in flight
  redis.call('ZADD', KEYS[2], 'XX', expiry, ARGV[6])
  redis.call('ZADD', KEYS[3], 'XX', expiry, ARGV[6])
  redis.call('ZADD', KEYS[6], 'XX', expiry, ARGV[6])
end
if ARGV[1] == 'running' then return redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
return 1
"""

# KEYS[1..8] as above; ARGV: cancelled body, done channel, scoped id, now ms, keep the tenant's
# stored bytes (0|1). A queued request is cancelled; a running generation is asked to stop
# ('stopping': the worker ends it at its next sync, keeping the text so far); otherwise the current
# status (or 'unknown').
CANCEL = """
local st = redis.call('HGET', KEYS[1], 'status')
if not st then return 'unknown' end
if st == 'running' then
  local ok, body = pcall(cjson.decode, redis.call('HGET', KEYS[1], 'body'))
  if ok and body['task'] == 'generate' then
    redis.call('HSET', KEYS[1], 'stop', 'cancel')
    return 'stopping'
  end
end
if st ~= 'queued' then return st end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'body', ARGV[1])
redis.call('PUBLISH', ARGV[2], ARGV[3])
for _, k in ipairs({KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]}) do redis.call('ZREM', k, ARGV[3]) end
redis.call('HDEL', KEYS[1], 'handoff')
if ARGV[5] == '1' then
  keep_bytes(KEYS[7], KEYS[8], ARGV[3], #ARGV[1], tonumber(ARGV[4]), redis.call('PTTL', KEYS[1]))
end
return 'cancelled'
"""

# KEYS[1] result key; ARGV: body. While the request runs, replace its body (a generation's text so
# far) and return its stop flag ('' = none); once it is not running, return '!' .. its status.
PROGRESS = """
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' then return '!' .. (st or '') end
redis.call('HSET', KEYS[1], 'body', ARGV[1])
return redis.call('HGET', KEYS[1], 'stop') or ''
"""

# KEYS[1] deadlines, KEYS[2] in flight (all), KEYS[3] pending; ARGV: now ms, result key prefix,
# in-flight key prefix (per model), done channel, error JSON, most to end, tenant key prefix. Ends
# every request past its deadline that is still queued (its message may wait anywhere: Celery, a
# worker's prefetch); returns their new bodies. Members are scoped ids.
EXPIRE_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[6]))
local out = {}
for _, id in ipairs(due) do
  redis.call('ZREM', KEYS[1], id)
  local key = ARGV[2] .. id
  if redis.call('HGET', key, 'status') == 'queued' then
    local body = cjson.decode(redis.call('HGET', key, 'body'))
    body['status'] = 'expired'
    body['error'] = cjson.decode(ARGV[5])
    body['timings']['done_ms'] = tonumber(ARGV[1])
    local text = cjson.encode(body)
    redis.call('HSET', key, 'status', 'expired', 'body', text)
    redis.call('HDEL', key, 'handoff')
    redis.call('ZREM', KEYS[3], id)
    redis.call('PUBLISH', ARGV[4], id)
    local tenant = ARGV[7] .. text_or_empty(body['tenant']) .. ':'
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', ARGV[3] .. text_or_empty(body['model']), id)
    redis.call('ZREM', tenant .. 'inflight', id)
    if redis.call('EXISTS', tenant .. 'sizes') == 1 then
      keep_bytes(tenant .. 'bytes', tenant .. 'sizes', id, #text, tonumber(ARGV[1]), redis.call('PTTL', key))
    end
    table.insert(out, text)
  end
end
return out
"""


# KEYS[1] pending; ARGV: cutoff ms, now ms, result key prefix, most to claim. Claims the queued
# requests admitted before the cutoff (their Celery message may have been lost with a worker killed
# as it took the message from Redis): each one's score becomes now, so another caller does not claim
# it too, and its hand-off is returned to be sent again. Ids no longer queued leave the set.
CLAIM_STALE = """
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
"""

# KEYS[1] unseen (sorted set of result keys), KEYS[2] unseen wire (hash); ARGV: cutoff ms, most to
# return. The API's hand-offs to Kafka that no intake has read since before the cutoff, as a flat
# list of result key, wire JSON; entries whose request is no longer queued (ended, or forgotten
# because Kafka refused it) leave the set.
UNSEEN = """
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
"""
