"""The result store's Lua scripts: every transition of a request's record, atomic on the server.

Each script documents its KEYS and ARGV. Shared KEYS (where a script takes them): [1] the
request's result hash, [2] requests in flight (all models), [3] in flight for the request's model,
[4] the deadlines sorted set, [5] the pending sorted set (queued requests by admission time).
"""

# KEYS[1] result key, KEYS[4] deadlines, KEYS[5] pending; ARGV: digest, queued body, ttl_s,
# deadline ms ('' = none), request id, hand-off JSON ('' = none), now ms. A queued request's
# hand-off (its Celery queue, priority and message item) is kept with it until it starts, so a
# message lost on the way to a worker can be sent again (ADMIT/CLAIM_STALE).
ADMIT = """
local cur = redis.call('HGET', KEYS[1], 'digest')
if not cur then
  local st = redis.call('HGET', KEYS[1], 'status')
  if st then return 'terminal' end
  redis.call('HSET', KEYS[1], 'status', 'queued', 'body', ARGV[2], 'digest', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[3])
  redis.call('INCR', KEYS[2])
  redis.call('INCR', KEYS[3])
  if ARGV[4] ~= '' then redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5]) end
  if ARGV[6] ~= '' then
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

# KEYS[1] result key; ARGV: status, body, ttl_s, only_if_absent (0|1), done channel, request id.
# Returns 0 when refused; when written, the request's attempt count for ``running`` (each start
# counts one: a start after a worker died mid-batch is a retry), else 1.
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
if ARGV[1] ~= 'queued' then
  redis.call('ZREM', KEYS[5], ARGV[6])
  redis.call('HDEL', KEYS[1], 'handoff')
end
if rank[ARGV[1]] >= 2 then
  redis.call('PUBLISH', ARGV[5], ARGV[6])
  redis.call('ZREM', KEYS[4], ARGV[6])
  if st then
    redis.call('DECR', KEYS[2])
    redis.call('DECR', KEYS[3])
  end
end
if ARGV[1] == 'running' then return redis.call('HINCRBY', KEYS[1], 'attempts', 1) end
return 1
"""

# KEYS[1] result key; ARGV: cancelled body, done channel, request id.
# A queued request is cancelled; a running generation is asked to stop ('stopping': the worker ends
# it at its next sync, keeping the text so far); otherwise the current status (or 'unknown').
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
redis.call('DECR', KEYS[2])
redis.call('DECR', KEYS[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('ZREM', KEYS[5], ARGV[3])
redis.call('HDEL', KEYS[1], 'handoff')
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
# in-flight key prefix, done channel, error JSON, most to end. Ends every request past its
# deadline that is still queued (its message may wait anywhere: Celery, a worker's prefetch);
# returns their new bodies.
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
    redis.call('DECR', KEYS[2])
    redis.call('DECR', ARGV[3] .. (body['model'] or ''))
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
