-- Failed-attempt buckets of the token endpoint (infra/broker/ratelimit.py, RedisAttemptLimiter).
-- KEYS: buckets. ARGV: sign (1 take, -1 give back), then per key its per-minute size.
-- Returns {1, '0'} (taken from every bucket) or {0, wait} (taken from none).
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local sign = tonumber(ARGV[1])
local levels = {}
local wait = 0
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[i + 1])
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * burst / 60)
  levels[i] = tokens
  if sign > 0 and tokens < 1 then
    wait = math.max(wait, (1 - tokens) * 60 / burst)
  end
end
if wait > 0 then
  return {0, tostring(wait)}
end
for i, key in ipairs(KEYS) do
  local burst = tonumber(ARGV[i + 1])
  local tokens = math.min(burst, levels[i] - sign)
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, 70)
end
return {1, '0'}
