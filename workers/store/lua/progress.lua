-- KEYS[1] result key; ARGV: body. While the request runs, replace its body (a generation's text so
-- far) and return its stop flag ('' = none); once it is not running, return '!' .. its status.
local st = redis.call('HGET', KEYS[1], 'status')
if st ~= 'running' then return '!' .. (st or '') end
redis.call('HSET', KEYS[1], 'body', ARGV[1])
return redis.call('HGET', KEYS[1], 'stop') or ''
