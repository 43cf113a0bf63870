-- The token bucket as a Lua function, prepended to rate_limit.lua and intake_accept.lua (one round
-- trip per ingest request). Server time, so web hosts' clocks do not matter.
-- take_tokens(key, rate, burst, cost) -> allowed (0/1), wait (seconds until cost would fit).
local function take_tokens(key, rate, burst, cost)
  local t = redis.call('TIME')
  local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
  local state = redis.call('HMGET', key, 'tokens', 'at')
  local tokens = tonumber(state[1]) or burst
  local at = tonumber(state[2]) or now
  tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
  local allowed = 0
  local wait = 0
  if tokens >= cost then
    tokens = tokens - cost
    allowed = 1
  else
    wait = (cost - tokens) / rate
  end
  redis.call('HSET', key, 'tokens', tostring(tokens), 'at', tostring(now))
  redis.call('EXPIRE', key, math.ceil(burst / rate) + 10)
  return allowed, wait
end
