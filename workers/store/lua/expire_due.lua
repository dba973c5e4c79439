-- KEYS[1] deadlines, KEYS[2] in flight (all), KEYS[3] pending, KEYS[4] the outbox stream, KEYS[5]
-- its refused counter; ARGV: now ms, result key prefix, in-flight key prefix (per model), done
-- channel, error JSON, most to end, tenant key prefix, the outbox's most entries. Ends
-- every request past its deadline that is still queued (its message may wait anywhere: Celery, a
-- worker's prefetch); returns their new bodies. Members are scoped ids; the expired ones are
-- announced in one PUBLISH, joined by a space (schemas.naming.done_ids reads it).
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[6]))
local out = {}
local finished = {}
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
    finished[#finished + 1] = id
    local tenant = ARGV[7] .. text_or_empty(body['tenant']) .. ':'
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', ARGV[3] .. text_or_empty(body['model']), id)
    redis.call('ZREM', tenant .. 'inflight', id)
    if redis.call('EXISTS', tenant .. 'sizes') == 1 then
      keep_bytes(tenant .. 'bytes', tenant .. 'sizes', id, #text, tonumber(ARGV[1]), redis.call('PTTL', key))
    end
    outbox_add(key, id, KEYS[4], KEYS[5], tonumber(ARGV[8]))
    table.insert(out, text)
  end
end
if #finished > 0 then redis.call('PUBLISH', ARGV[4], table.concat(finished, ' ')) end
return out
