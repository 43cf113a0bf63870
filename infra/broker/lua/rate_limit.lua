-- A tenant's ingest rate limit on its own (after take_tokens.lua).
-- KEYS: bucket.  ARGV: rate, burst, cost.  Returns {allowed, wait}.
local allowed, wait = take_tokens(KEYS[1], tonumber(ARGV[1]), tonumber(ARGV[2]),
                                  tonumber(ARGV[3]))
return {allowed, tostring(wait)}
