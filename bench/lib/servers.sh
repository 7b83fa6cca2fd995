# shellcheck shell=bash
# Starting the servers under test on 127.0.0.1, each on a free port with a
# fresh directory under $WORK (emptied at each start: a server started again
# with the same tag, as in the rounds of get and put, never finds the last
# run's data). Every start_* function tracks the PID (see common.sh), records
# the settings it used (settings_note) and returns non-zero, with the reason
# in START_ERROR, if the server does not come up.
#
# Sourced, not run. Expects common.sh, and BIN (the spread binary).

START_DEADLINE=${START_DEADLINE:-60} # seconds for a server to come up
START_ERROR=
SETTINGS_MD=$WORK/settings.md
: >"$SETTINGS_MD"
declare -A SETTINGS_SEEN=()

# settings_note KEY TITLE FILE_OR_TEXT: appends a settings section once per KEY.
settings_note() {
    local key=$1 title=$2 body=$3
    [[ -n ${SETTINGS_SEEN[$key]:-} ]] && return 0
    SETTINGS_SEEN[$key]=1
    {
        echo "### $title"
        echo
        echo '```'
        if [[ -f $body ]]; then cat "$body"; else printf '%s\n' "$body"; fi
        echo '```'
        echo
    } >>"$SETTINGS_MD"
}

# fail_start NAME LOG: sets START_ERROR, shows the log tail; returns 1. Sets
# PORT_TAKEN when the log says a port was taken.
fail_start() {
    START_ERROR="$1 did not start (log: $(tail -n 3 "$2" 2>/dev/null | tr '\n' ' ' | cut -c1-300))"
    grep -qi 'address already in use' "$2" 2>/dev/null && PORT_TAKEN=1
    warn "$START_ERROR"
    return 1
}

# start_retrying FN [ARGS...]: runs the start function FN, again (up to 3
# times in all) while it fails because a port it picked was taken between
# free_port's look and the server's bind.
start_retrying() {
    local attempt
    for ((attempt = 1; attempt <= 3; attempt++)); do
        PORT_TAKEN=
        "$@" && return 0
        [[ -n $PORT_TAKEN ]] || return 1
        warn "$1: a port was taken; trying others"
    done
    return 1
}

# --- spread --------------------------------------------------------------------
SPREAD_PID= SPREAD_ADDR= SPREAD_SCHEME=

# spread_addr LOG: "SCHEME ADDR" from "listening on SCHEME://ADDR", if printed yet.
spread_addr() {
    local line
    line=$(grep -m1 -o 'listening on https\{0,1\}://[0-9.:]*' "$1") || return 1
    line=${line#listening on }
    printf '%s %s' "${line%%://*}" "${line#*://}"
}

# start_spread TAG DURABILITY [extra serve args...]: sets SPREAD_PID,
# SPREAD_ADDR (HOST:PORT) and SPREAD_SCHEME (http, or https once TLS exists).
start_spread() {
    local tag=$1 mode=$2 dir out
    shift 2
    dir=$WORK/spread-$tag
    out=$WORK/spread-$tag.log
    rm -rf "$dir"
    mkdir -p "$dir/data"
    local args=(serve --listen 127.0.0.1:0 --data "$dir/data" --durability "$mode" "$@")
    "$BIN" "${args[@]}" >"$out" 2>&1 &
    SPREAD_PID=$!
    track "$SPREAD_PID"
    SPREAD_ADDR= SPREAD_SCHEME=
    wait_until "$START_DEADLINE" "$SPREAD_PID" spread_addr "$out" || fail_start "spread ($tag)" "$out" || return 1
    read -r SPREAD_SCHEME SPREAD_ADDR <<<"$(spread_addr "$out")"
    curl -fsSk -o /dev/null "$SPREAD_SCHEME://$SPREAD_ADDR/healthz" || fail_start "spread ($tag): /healthz" "$out" || return 1
    settings_note "spread-$mode-$*" "spread ($mode)" "spread ${args[*]//$WORK/\$TMP}"
    log "spread ($tag, $mode) pid $SPREAD_PID on $SPREAD_ADDR"
}

# start_spread_cluster TAG N DURABILITY [extra serve args...]: N nodes (ids
# TAG1..TAGN) joined to the first, with a shared cluster secret; returns once
# every node lists N members alive (30 s at most). Sets CLUSTER_ADDRS and
# CLUSTER_PIDS (first node first).
CLUSTER_ADDRS=() CLUSTER_PIDS=()
start_spread_cluster() {
    local tag=$1 n=$2 mode=$3 i t0
    shift 3
    CLUSTER_ADDRS=() CLUSTER_PIDS=()
    for ((i = 1; i <= n; i++)); do
        local join=()
        ((i > 1)) && join=(--join "${CLUSTER_ADDRS[0]}")
        start_spread "$tag$i" "$mode" --node-id "$tag$i" --cluster-secret bench-cluster-secret-0123456789 \
            "$@" "${join[@]}" || return 1
        CLUSTER_ADDRS+=("$SPREAD_ADDR")
        CLUSTER_PIDS+=("$SPREAD_PID")
    done
    t0=$(now_ms)
    until cluster_all_alive "$n" "${CLUSTER_ADDRS[@]}"; do
        (($(now_ms) - t0 < 30000)) || {
            START_ERROR="the $n nodes of $tag did not converge in 30 s"
            return 1
        }
        sleep 0.05
    done
}

now_ms() { date +%s%3N; }
# cluster_urls ADDR...: the /cluster URL of each node.
cluster_urls() { local a; for a in "$@"; do printf 'http://%s/cluster\n' "$a"; done; }
# cluster_all_alive N ADDR...: true if every node lists N members alive (one curl for all).
cluster_all_alive() {
    local n=$1
    shift
    [[ $(curl -fsS $(cluster_urls "$@") 2>/dev/null |
        jq -s --argjson n "$n" 'length > 0 and all(.[]; ([.members[] | select(.state == "alive")] | length) == $n)' 2>/dev/null) == true ]]
}
# cluster_all_dead NODE ADDR...: true if every node lists NODE dead.
cluster_all_dead() {
    local node=$1
    shift
    [[ $(curl -fsS $(cluster_urls "$@") 2>/dev/null |
        jq -s --arg n "$node" --argjson k "$#" 'length == $k and all(.[]; any(.members[]; .node == $n and .state == "dead"))' 2>/dev/null) == true ]]
}

# --- nginx ---------------------------------------------------------------------
NGINX_PID= NGINX_PORT= NGINX_TLS_PORT=

# start_nginx: a static file at /raw/bench/hot (the 100-byte value) over
# plain HTTP/1.1 on NGINX_PORT and HTTPS (HTTP/2) on NGINX_TLS_PORT, with a
# self-signed certificate made here.
start_nginx() { start_retrying start_nginx_once; }
start_nginx_once() {
    local dir=$WORK/nginx conf out
    conf=$dir/nginx.conf
    out=$dir/error.log
    mkdir -p "$dir/www/raw/bench" "$dir/tmp"
    # nginx appends to its log: start each attempt with an empty one, so an
    # earlier start's "address already in use" is not taken for this one's.
    : >"$out"
    printf '%s' "$VALUE" >"$dir/www/raw/bench/hot"
    # The workers run as an unprivileged user: let them reach the files.
    chmod 711 "$WORK" "$dir" && chmod -R a+rX "$dir/www"
    ensure_cert || {
        START_ERROR="nginx: openssl could not make a certificate"
        return 1
    }
    NGINX_PORT=$(free_port) && NGINX_TLS_PORT=$(free_port) || {
        START_ERROR="nginx: no free port"
        return 1
    }
    if [[ $NGINX_TLS_PORT == "$NGINX_PORT" ]]; then
        START_ERROR="nginx: free_port gave one port twice" PORT_TAKEN=1
        return 1
    fi
    cat >"$conf" <<EOF
worker_processes $(nproc);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 16384; }
http {
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    open_file_cache max=64 inactive=60s;
    default_type application/octet-stream;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$NGINX_PORT;
        root $dir/www;
    }
    server {
        listen 127.0.0.1:$NGINX_TLS_PORT ssl http2;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        root $dir/www;
    }
}
EOF
    nginx -e "$out" -p "$dir" -c "$conf" -g 'daemon off;' >"$dir/stdout.log" 2>&1 &
    NGINX_PID=$!
    track "$NGINX_PID"
    # Served by nginx, not merely open: a port taken by another process in
    # the meantime would be open too (and nginx retries its bind for 2.5 s).
    wait_until "$START_DEADLINE" "$NGINX_PID" nginx_serves || fail_start nginx "$out" || return 1
    settings_note nginx "nginx $(nginx -v 2>&1 | sed 's/.*nginx\///')" "$(sed "s|$WORK|\$TMP|g" "$conf")"
    log "nginx pid $NGINX_PID on 127.0.0.1:$NGINX_PORT (https/h2 on $NGINX_TLS_PORT)"
}

# nginx_serves: both of nginx's ports answer with the hot value.
nginx_serves() {
    [[ $(curl -fsS --max-time 2 "http://127.0.0.1:$NGINX_PORT/raw/bench/hot") == "$VALUE" ]] &&
        [[ $(curl -fsSk --max-time 2 "https://127.0.0.1:$NGINX_TLS_PORT/raw/bench/hot") == "$VALUE" ]]
}

CERT= KEY=
# ensure_cert: a self-signed P-256 certificate for 127.0.0.1 in $WORK/tls.
ensure_cert() {
    [[ -n $CERT ]] && return 0
    mkdir -p "$WORK/tls"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 \
        -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" >"$WORK/tls/openssl.log" 2>&1 || return 1
    CERT=$WORK/tls/cert.pem
    KEY=$WORK/tls/key.pem
}

# --- etcd ----------------------------------------------------------------------
ETCD_PID= ETCD_PORT=

# start_etcd: a single-member etcd (default durability: the WAL is fsynced
# before a write is acknowledged); the JSON gateway is on ETCD_PORT.
start_etcd() { start_retrying start_etcd_once; }
start_etcd_once() {
    local dir=$WORK/etcd peer out
    out=$dir.log
    rm -rf "$dir"
    mkdir -p "$dir"
    ETCD_PORT=$(free_port) && peer=$(free_port) || {
        START_ERROR="etcd: no free port"
        return 1
    }
    if [[ $peer == "$ETCD_PORT" ]]; then
        START_ERROR="etcd: free_port gave one port twice" PORT_TAKEN=1
        return 1
    fi
    local args=(--name bench --data-dir "$dir"
        --listen-client-urls "http://127.0.0.1:$ETCD_PORT"
        --advertise-client-urls "http://127.0.0.1:$ETCD_PORT"
        --listen-peer-urls "http://127.0.0.1:$peer"
        --initial-advertise-peer-urls "http://127.0.0.1:$peer"
        --initial-cluster "bench=http://127.0.0.1:$peer"
        --logger zap --log-level warn)
    etcd "${args[@]}" >"$out" 2>&1 &
    ETCD_PID=$!
    track "$ETCD_PID"
    wait_until "$START_DEADLINE" "$ETCD_PID" curl -fsS -o /dev/null "http://127.0.0.1:$ETCD_PORT/health" ||
        fail_start etcd "$out" || return 1
    settings_note etcd "etcd $(etcd --version | awk '/etcd Version/ { print $3 }') (single member, JSON gateway)" \
        "etcd ${args[*]//$WORK/\$TMP}
# defaults kept: WAL fsync before every ack (no --unsafe-no-fsync), GOMAXPROCS = $(nproc)"
    log "etcd pid $ETCD_PID on 127.0.0.1:$ETCD_PORT"
}

# start_etcd_cluster: three etcd members on this box (default durability),
# each with its own data directory; ETCD_PORT is the leader's client port
# (the member that takes writes without a hop: etcd's best case).
start_etcd_cluster() { start_retrying start_etcd_cluster_once; }
start_etcd_cluster_once() {
    local i ports=() initial= out args pid leader
    free_ports "etcd cluster" 6 || return 1
    ports=("${FREE_PORTS[@]}")
    for i in 0 1 2; do initial+="${initial:+,}e$i=http://127.0.0.1:${ports[i * 2 + 1]}"; done
    ETCD_PIDS=()
    for i in 0 1 2; do
        rm -rf "$WORK/etcd-e$i"
        mkdir -p "$WORK/etcd-e$i"
        out=$WORK/etcd-e$i.log
        args=(--name "e$i" --data-dir "$WORK/etcd-e$i"
            --listen-client-urls "http://127.0.0.1:${ports[i * 2]}"
            --advertise-client-urls "http://127.0.0.1:${ports[i * 2]}"
            --listen-peer-urls "http://127.0.0.1:${ports[i * 2 + 1]}"
            --initial-advertise-peer-urls "http://127.0.0.1:${ports[i * 2 + 1]}"
            --initial-cluster "$initial" --initial-cluster-state new
            --initial-cluster-token bench --logger zap --log-level warn)
        etcd "${args[@]}" >"$out" 2>&1 &
        pid=$!
        track "$pid"
        ETCD_PIDS+=("$pid")
    done
    for i in 0 1 2; do
        wait_until "$START_DEADLINE" "${ETCD_PIDS[i]}" curl -fsS -o /dev/null "http://127.0.0.1:${ports[i * 2]}/health" ||
            fail_start "etcd member e$i" "$WORK/etcd-e$i.log" || return 1
    done
    ETCD_PORT=
    for i in 0 1 2; do
        leader=$(curl -fsS -X POST "http://127.0.0.1:${ports[i * 2]}/v3/maintenance/status" -d '{}' |
            jq -r 'if .header.member_id == .leader then "yes" else "no" end' 2>/dev/null)
        [[ $leader == yes ]] && ETCD_PORT=${ports[i * 2]}
    done
    if [[ -z $ETCD_PORT ]]; then
        START_ERROR="etcd cluster: no member says it leads"
        return 1
    fi
    settings_note etcd-cluster "etcd $(etcd --version | awk '/etcd Version/ { print $3 }') (3 members on this box, JSON gateway at the leader)" \
        "etcd ${args[*]//$WORK/\$TMP}   # and e0, e1 alike
# defaults kept: WAL fsync before every ack, GOMAXPROCS = $(nproc)"
    log "etcd cluster pids ${ETCD_PIDS[*]}; leader's client port $ETCD_PORT"
}

# etcd_put KEY VALUE: one write through the JSON gateway.
etcd_put() {
    curl -fsS -o /dev/null -X POST "http://127.0.0.1:$ETCD_PORT/v3/kv/put" \
        -d "{\"key\":\"$(b64 "$1")\",\"value\":\"$(b64 "$2")\"}"
}

# --- redis ---------------------------------------------------------------------
REDIS_PID= REDIS_PORT=

# start_redis TAG [config lines...]: no RDB snapshots; no AOF unless the
# lines turn it on (e.g. "appendonly yes" "appendfsync always").
start_redis() { start_retrying start_redis_once "$@"; }
start_redis_once() {
    local tag=$1 dir conf out maxclients
    shift
    dir=$WORK/redis-$tag
    conf=$dir/redis.conf
    out=$dir/redis.log
    rm -rf "$dir"
    mkdir -p "$dir"
    REDIS_PORT=$(free_port) || {
        START_ERROR="redis: no free port"
        return 1
    }
    # Room for the fan-out subscribers within our descriptor limit.
    maxclients=$(($(ulimit -n) - 64))
    ((maxclients > 50000)) && maxclients=50000
    {
        echo "bind 127.0.0.1"
        echo "port $REDIS_PORT"
        echo "protected-mode no"
        echo "daemonize no"
        echo "dir $dir"
        echo "logfile $out"
        echo "save \"\""
        echo "maxclients $maxclients"
        if (($#)); then printf '%s\n' "$@"; else echo "appendonly no"; fi
    } >"$conf"
    redis-server "$conf" >"$dir/stdout.log" 2>&1 &
    REDIS_PID=$!
    track "$REDIS_PID"
    wait_until "$START_DEADLINE" "$REDIS_PID" redis_ping || fail_start "redis ($tag)" "$out" || return 1
    settings_note "redis-$tag" "redis $(redis-server --version | grep -o 'v=[0-9.]*' | cut -c3-) ($tag)" \
        "$(sed "s|$WORK|\$TMP|g" "$conf")"
    log "redis ($tag) pid $REDIS_PID on 127.0.0.1:$REDIS_PORT"
}

redis_ping() { [[ $(redis-cli -p "$REDIS_PORT" ping 2>/dev/null) == PONG ]]; }

# --- nats ----------------------------------------------------------------------
NATS_PIDS=() NATS_PORTS=()

# start_nats_cluster: three nats-server processes on this box joined by
# routes (one cluster, no persistence: core NATS pub/sub); NATS_PORTS holds
# their client ports. Waits until each has routes to the two others.
start_nats_cluster() { start_retrying start_nats_cluster_once; }
start_nats_cluster_once() {
    local i j ports=() routes out pid n
    free_ports "nats cluster" 9 || return 1
    ports=("${FREE_PORTS[@]}")
    # Per server i: client ports[i*3], route ports[i*3+1], monitoring ports[i*3+2].
    NATS_PIDS=() NATS_PORTS=()
    for i in 0 1 2; do
        routes=
        for j in 0 1 2; do
            ((j == i)) || routes+="${routes:+,}nats://127.0.0.1:${ports[j * 3 + 1]}"
        done
        out=$WORK/nats-$i.log
        nats-server -a 127.0.0.1 -p "${ports[i * 3]}" -m "${ports[i * 3 + 2]}" \
            --cluster "nats://127.0.0.1:${ports[i * 3 + 1]}" --cluster_name bench \
            --routes "$routes" >"$out" 2>&1 &
        pid=$!
        track "$pid"
        NATS_PIDS+=("$pid")
        NATS_PORTS+=("${ports[i * 3]}")
    done
    for i in 0 1 2; do
        wait_until "$START_DEADLINE" "${NATS_PIDS[i]}" nats_routed "${ports[i * 3 + 2]}" ||
            fail_start "nats server $i" "$WORK/nats-$i.log" || return 1
    done
    n=$(nats-server --version | awk '{ print $2 }')
    settings_note nats-cluster "nats-server $n (3 servers on this box, routes between them)" \
        "nats-server -a 127.0.0.1 -p PORT -m MONITOR_PORT --cluster nats://127.0.0.1:ROUTE_PORT --cluster_name bench --routes <the two others>
# defaults kept: core NATS (no JetStream: nothing persisted), as Redis pub/sub"
    log "nats cluster pids ${NATS_PIDS[*]}; client ports ${NATS_PORTS[*]}"
}
# nats_routed MONITOR_PORT: that server has routes to both others (NATS 2.10
# and later open several route connections per peer: count the peers).
nats_routed() {
    local peers
    peers=$(curl -fsS "http://127.0.0.1:$1/routez" 2>/dev/null |
        jq -r '[.routes[]?.remote_id] | unique | length' 2>/dev/null)
    [[ -n $peers ]] && ((peers >= 2))
}
