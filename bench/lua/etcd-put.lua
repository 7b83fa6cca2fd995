-- wrk script: write a 100-byte value to bench/k<random 1..10000> through
-- etcd's JSON gateway, POST /v3/kv/put {"key": b64, "value": b64}.
-- The etcd counterpart of bench/put.lua; used by bench/run.sh as
-- `wrk -s bench/lua/etcd-put.lua http://HOST:PORT`.

wrk.method = "POST"
wrk.path = "/v3/kv/put"
wrk.headers["Content-Type"] = "application/json"

local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

-- Standard base64 (with padding) of a byte string.
local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local quad = {}
    for k = 4, 1, -1 do
      local idx = n % 64
      quad[k] = alphabet:sub(idx + 1, idx + 1)
      n = math.floor(n / 64)
    end
    if not b then quad[3] = "=" end
    if not c then quad[4] = "=" end
    out[#out + 1] = table.concat(quad)
  end
  return table.concat(out)
end

local value = base64(string.rep("v", 100))
-- Formatted once per thread, as in bench/put.lua.
local requests = {}

local threads = 0

-- Runs once per thread in the main Lua state: a distinct id per thread so
-- the threads do not draw the same key sequence.
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  for i = 1, 10000 do
    local body = '{"key":"' .. base64("bench/k" .. i) .. '","value":"' .. value .. '"}'
    requests[i] = wrk.format(nil, nil, nil, body)
  end
end

function request()
  return requests[math.random(1, 10000)]
end
