-- KEYS[1..8] as above, [9] the outbox stream, [10] its refused counter; ARGV: cancelled body, done
-- channel, scoped id, now ms, keep the tenant's stored bytes (0|1), the outbox's most entries. A queued request is cancelled; a running generation is asked to stop
-- ('stopping': the worker ends it at its next sync, keeping the text so far); otherwise the current
-- status (or 'unknown').
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
outbox_add(KEYS[1], ARGV[3], KEYS[9], KEYS[10], tonumber(ARGV[6]))
return 'cancelled'
