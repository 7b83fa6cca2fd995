-- wrk script: PUT a 100-byte body to /raw/bench/k<random 1..10000>.
-- Used by bench/http.sh; run as `wrk -s bench/put.lua http://HOST:PORT`.

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

function init(args)
  math.randomseed(os.time() * 1000 + (thread_id or 0))
end

function request()
  return wrk.format(nil, "/raw/bench/k" .. math.random(1, 10000))
end
