-- wrk script: PUT a 100-byte body to /raw/bench/k<random 1..10000>.
-- Used by bench/http.sh and bench/run.sh; run as
-- `wrk -s bench/put.lua http://HOST:PORT`. The 10k requests are formatted
-- once per thread, so the client spends its time sending, not formatting.
-- An argument after `--` is appended to every path as a query string, e.g.
-- `wrk -s bench/put.lua http://HOST:PORT -- w=1` writes /raw/bench/k7?w=1.

wrk.method = "PUT"
wrk.body = string.rep("v", 100)
wrk.headers["Content-Type"] = "application/octet-stream"

local threads = 0

-- Runs once per thread in the main Lua state: give each thread its own id
-- so the threads do not draw the same key sequence.
function setup(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

local requests = {}

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
  local query = ""
  if args[1] and args[1] ~= "" then query = "?" .. args[1] end
  for i = 1, 10000 do
    requests[i] = wrk.format(nil, "/raw/bench/k" .. i .. query)
  end
end

function request()
  return requests[math.random(1, 10000)]
end
