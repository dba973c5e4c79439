-- Moves a batch of requests' records forward, each as one ADVANCE would, in one call (one round
-- trip and one script run per batch, not per request).
-- KEYS: [1] requests in flight (all models), [2] the deadlines sorted set, [3] the pending sorted
-- set, [4] the outbox stream, [5] the outbox's refused counter, then 5 per request: its result
-- hash, in flight for its model, the tenant's requests in flight, the tenant's stored result bytes
-- (sorted set by expiry) and sizes hash.
-- ARGV: ttl_s, only_if_absent (0|1), done channel, now ms, the outbox's most entries, then 5 per
-- request: status, body, scoped id, keep the tenant's stored bytes (0|1), delivery targets JSON
-- ('' = none; recorded only where this write creates the record: an admitted request keeps the
-- targets it was admitted with). A result made terminal is put in the outbox when its record names
-- targets (outbox_add).
-- Returns per request 0 when refused; when written, its attempt count for ``running`` (each start
-- counts one: a start after a worker died mid-batch is a retry), else 1. The ids made terminal are
-- announced in one PUBLISH, joined by a space (schemas.naming.done_ids reads it).
local rank = {queued=0, running=1, done=2, failed=2, expired=2, cancelled=2}
local ttl, absent_only, channel, now = ARGV[1], ARGV[2] == '1', ARGV[3], tonumber(ARGV[4])
local outbox_most = tonumber(ARGV[5])
local expiry = now + tonumber(ttl) * 1000
local finished = {}

local function advance(key, model_inflight, tenant_inflight, bytes_z, bytes_h, status, body, sid, keep, deliver)
  local st = redis.call('HGET', key, 'status')
  if st then
    if absent_only then return 0 end
    if rank[st] >= 2 then return 0 end
    if rank[status] < rank[st] then return 0 end
  end
  redis.call('HSET', key, 'status', status, 'body', body)
  if not st and deliver ~= '' then redis.call('HSET', key, 'deliver', deliver) end
  redis.call('EXPIRE', key, ttl)
  if status ~= 'queued' and st ~= 'running' then  -- a running record left both when it started
    redis.call('ZREM', KEYS[3], sid)
    redis.call('HDEL', key, 'handoff')
  end
  if rank[status] >= 2 then
    finished[#finished + 1] = sid
    redis.call('ZREM', KEYS[2], sid)
    redis.call('ZREM', KEYS[1], sid)
    redis.call('ZREM', model_inflight, sid)
    redis.call('ZREM', tenant_inflight, sid)
    if keep == '1' then
      keep_bytes(bytes_z, bytes_h, sid, #body, now, tonumber(ttl) * 1000)
    end
    outbox_add(key, sid, KEYS[4], KEYS[5], outbox_most)
  else  -- its hash now lives ttl_s longer: so does its place in flight
    redis.call('ZADD', KEYS[1], 'XX', expiry, sid)
    redis.call('ZADD', model_inflight, 'XX', expiry, sid)
    redis.call('ZADD', tenant_inflight, 'XX', expiry, sid)
  end
  if status == 'running' then return redis.call('HINCRBY', key, 'attempts', 1) end
  return 1
end

local out = {}
for i = 0, (#ARGV - 5) / 5 - 1 do
  local k, a = 5 + i * 5, 5 + i * 5
  out[i + 1] = advance(KEYS[k + 1], KEYS[k + 2], KEYS[k + 3], KEYS[k + 4], KEYS[k + 5],
    ARGV[a + 1], ARGV[a + 2], ARGV[a + 3], ARGV[a + 4], ARGV[a + 5])
end
if #finished > 0 then redis.call('PUBLISH', channel, table.concat(finished, ' ')) end
return out
