-- wrk script: read one key through etcd's JSON gateway,
-- POST /v3/kv/range {"key": base64("bench/hot"), "serializable": true}.
-- Serializable: answered from the member's local state, like a cache read
-- (the default, linearizable, first confirms leadership through raft).
-- Used by bench/run.sh; run as `wrk -s bench/lua/etcd-range.lua http://HOST:PORT`.

wrk.method = "POST"
wrk.path = "/v3/kv/range"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"key":"YmVuY2gvaG90","serializable":true}' -- base64("bench/hot")
