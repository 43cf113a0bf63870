-- The Redis intake's one call (after take_tokens.lua): charge the tenant's rate limit, claim each
-- event id and enqueue one Dramatiq message for the new ones, written as RedisBroker.enqueue
-- writes it (HSET <ns>:<queue>.msgs id message; RPUSH <ns>:<queue> id: dramatiq_compat.py).
-- KEYS: queue list, queue message hash, the tenant's rate-limit bucket.
-- ARGV: ttl, key prefix, redis message id, message prefix, message suffix, rate (0: no charge),
--       burst, cost, then per event (id, hash, document json).
-- Returns per event {code, document}: 0 new, 1 same, 2 conflict; or {{-1, wait}} when the
-- bucket cannot pay (nothing accepted).
local ttl = tonumber(ARGV[1])
local prefix = ARGV[2]
local rate = tonumber(ARGV[6])
if rate > 0 then
  local allowed, wait = take_tokens(KEYS[3], rate, tonumber(ARGV[7]), tonumber(ARGV[8]))
  if allowed == 0 then
    return {{-1, tostring(wait)}}
  end
end
local results = {}
local accepted = {}
local n = (#ARGV - 8) / 3
for i = 0, n - 1 do
  local id = ARGV[9 + 3 * i]
  local h = ARGV[10 + 3 * i]
  local doc = ARGV[11 + 3 * i]
  local key = prefix .. id
  local existing = redis.call("GET", key)
  if existing then
    local code = 2
    if string.sub(existing, 1, 64) == h then code = 1 end
    results[i + 1] = {code, string.sub(existing, 66)}
  else
    redis.call("SET", key, h .. "|" .. doc, "EX", ttl)
    accepted[#accepted + 1] = doc
    results[i + 1] = {0, ""}
  end
end
if #accepted > 0 then
  redis.call("HSET", KEYS[2], ARGV[3], ARGV[4] .. "[" .. table.concat(accepted, ",") .. "]" .. ARGV[5])
  redis.call("RPUSH", KEYS[1], ARGV[3])
end
return results
