-- KEYS[1..8] as above; ARGV: status, body, ttl_s, only_if_absent (0|1), done channel, scoped id,
-- now ms, keep the tenant's stored bytes (0|1). Returns 0 when refused; when written, the
-- request's attempt count for ``running`` (each start counts one: a start after a worker died
-- mid-batch is a retry), else 1.
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
