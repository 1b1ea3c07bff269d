#!/usr/bin/env bash
# scripts/ha.sh — pg_auto_failover on one machine: a monitor and two data nodes
# (primary + synchronous standby) on 127.0.0.1, for development and CI.
#
#   ha.sh up                start (create on first use) monitor, node1, node2; wait for primary+secondary;
#                           print the multi-host DATABASE_URL and the primary's single-host URL (for dbmate)
#   ha.sh down [--purge]    stop everything (and delete the data with --purge)
#   ha.sh status            pg_autoctl show state
#   ha.sh url               print DATABASE_URL (multi-host, target_session_attrs=read-write)
#   ha.sh wait [SECONDS]    wait until one node is primary and the other secondary (default 60 s)
#   ha.sh primary           print "NAME PORT" of the node taking writes (primary, or wait_primary after a failover)
#   ha.sh primary-url       single-host URL of the current primary (for dbmate: it cannot parse multi-host URLs)
#   ha.sh standby           print "NAME PORT" of the secondary
#   ha.sh kill NAME [--postmaster]
#                           kill -9 node NAME: its whole process group (keeper + postmaster: "the machine
#                           is gone"), or with --postmaster the postmaster only (the keeper restarts it)
#   ha.sh start NAME        start node NAME again (after kill/stop); it rejoins as a standby (pg_rewind)
#   ha.sh stop NAME         stop node NAME cleanly
#   ha.sh timers fast|default   change the monitor's failure-detection timers at run time
#   ha.sh psql NAME|monitor [psql args...]
#
# Environment:
#   HA_DIR     where everything lives (default /tmp/waitress-ha); made owned by the postgres user when run as root
#   HA_DB      database created on the nodes (default waitress)
#   HA_TIMERS  fast (default) | default — pg_auto_failover's failure-detection timers, chosen at creation
#   HA_PORTS   "MONITOR,NODE1,NODE2" (default: three free ports from HA_PORT_FROM, default 25400: below the
#              ephemeral range 32768-60999, where a client socket can take the port before the server binds it)
#   HA_PGBIN   PostgreSQL bin dir (default: pg_config --bindir, else /usr/lib/postgresql/15/bin)
#   HA_USER    OS user that runs the servers when called as root (default postgres)
#
# Auth is trust on 127.0.0.1 and no TLS: for a single test machine only.
set -euo pipefail

HA_DIR=${HA_DIR:-/tmp/waitress-ha}
HA_DB=${HA_DB:-waitress}
HA_TIMERS=${HA_TIMERS:-fast}
HA_USER=${HA_USER:-postgres}
HA_PORT_FROM=${HA_PORT_FROM:-25400}
if [[ -z ${HA_PGBIN:-} ]]; then
  if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then HA_PGBIN=/usr/lib/postgresql/15/bin
  else HA_PGBIN=$(pg_config --bindir); fi
fi
NODES=(node1 node2)

log() { printf '%s ha.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

# Run a command as the server user with pg_autoctl's XDG dirs inside HA_DIR.
as_pg() {
  local envv=(XDG_CONFIG_HOME="$HA_DIR/xdg/config" XDG_DATA_HOME="$HA_DIR/xdg/data" XDG_RUNTIME_DIR="$HA_DIR/xdg/run"
    PATH="$HA_PGBIN:/usr/bin:/bin:/usr/sbin:/sbin" PG_CONFIG="$HA_PGBIN/pg_config" PGCONNECT_TIMEOUT=3)
  if [[ $(id -u) -eq 0 ]]; then runuser -u "$HA_USER" -- env "${envv[@]}" "$@"
  else env "${envv[@]}" "$@"; fi
}

port_free() {
  local p=$1
  [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] && [[ ! -e /var/run/postgresql/.s.PGSQL.$p ]] && [[ ! -e /tmp/.s.PGSQL.$p ]]
}

load_env() {
  [[ -f $HA_DIR/ha.env ]] || die "no cluster in $HA_DIR (run: ha.sh up)"
  # shellcheck disable=SC1091
  . "$HA_DIR/ha.env"
}

port_of() {
  case $1 in monitor) echo "$MONITOR_PORT" ;; node1) echo "$PORT1" ;; node2) echo "$PORT2" ;; *) die "unknown node $1" ;; esac
}

state_json() { as_pg pg_autoctl show state --pgdata "$HA_DIR/monitor" --json 2>/dev/null; }

# "name port" of the node whose reported and assigned state are both $1.
node_in_state() {
  state_json | jq -r --arg s "$1" '.[] | select(.current_group_state == $s and .assigned_group_state == $s and .health == 1) | "\(.nodename) \(.nodeport)"' | head -1
}

# "name port" of the node taking writes: primary, or wait_primary (promoted, its standby not back yet).
writable_node() {
  state_json | jq -r '.[] | select((.current_group_state == "primary" or .current_group_state == "wait_primary") and .assigned_group_state == .current_group_state) | "\(.nodename) \(.nodeport)"' | head -1
}

running_pid() { # pid of `pg_autoctl run` for a pgdata, if alive
  local f="$HA_DIR/xdg/run/pg_autoctl$HA_DIR/$1/pg_autoctl.pid" pid
  [[ -f $f ]] || return 1
  pid=$(head -1 "$f")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}

run_bg() { # start `pg_autoctl run` for a pgdata in its own session (process group = its pid)
  local name=$1
  if running_pid "$name" >/dev/null; then log "$name already running"; return; fi
  as_pg setsid pg_autoctl run --pgdata "$HA_DIR/$name" >>"$HA_DIR/log/$name.log" 2>&1 </dev/null &
  local i
  for i in $(seq 1 100); do running_pid "$name" >/dev/null && return; sleep 0.1; done
  die "pg_autoctl run for $name did not start; see $HA_DIR/log/$name.log"
}

wait_pg() { # wait until postgres answers on a port
  local port=$1 i
  for i in $(seq 1 150); do
    as_pg pg_isready -q -h 127.0.0.1 -p "$port" && return
    sleep 0.2
  done
  die "postgres on port $port did not come up"
}

cmd_wait() {
  load_env
  local limit=${1:-60} start=$SECONDS p s
  while (( SECONDS - start < limit )); do
    p=$(node_in_state primary); s=$(node_in_state secondary)
    if [[ -n $p && -n $s ]]; then
      # the primary must also have synchronous replication switched on
      if [[ -n $(as_pg psql -XAtq -h 127.0.0.1 -p "${p#* }" -d "$HA_DB" -c 'show synchronous_standby_names' 2>/dev/null) ]]; then
        log "primary: $p, secondary: $s (after $((SECONDS - start)) s)"; return 0
      fi
    fi
    sleep 0.5
  done
  as_pg pg_autoctl show state --pgdata "$HA_DIR/monitor" >&2 || true
  die "no primary+secondary after ${limit} s"
}

fast_timers_sql() {
  cat <<'EOF'
pgautofailover.health_check_period = 1000
pgautofailover.health_check_timeout = 1000
pgautofailover.health_check_max_retries = 1
pgautofailover.health_check_retry_delay = 500
pgautofailover.node_considered_unhealthy_timeout = 3000
pgautofailover.primary_demote_timeout = 5000
pgautofailover.startup_grace_period = 2000
EOF
}

small_memory_conf() {
  # pg_autoctl sizes shared_buffers to 1/4 of RAM per instance: three of them on one box is too much.
  printf '%s\n' "# ha.sh: small footprint for one-machine clusters" "shared_buffers = 128MB" "work_mem = 4MB" \
    "maintenance_work_mem = 64MB" "effective_cache_size = 1GB" "max_connections = 200"
}

create_cluster() {
  local ports
  command -v pg_autoctl >/dev/null || die "pg_autoctl not found (apt-get install postgresql-15-auto-failover)"
  if [[ -n ${HA_PORTS:-} ]]; then
    IFS=, read -r -a ports <<<"$HA_PORTS"
    for p in "${ports[@]}"; do port_free "$p" || die "port $p is in use"; done
  else
    ports=(); local p=$HA_PORT_FROM
    while (( ${#ports[@]} < 3 )); do port_free "$p" && ports+=("$p"); p=$((p + 1)); done
  fi
  MONITOR_PORT=${ports[0]} PORT1=${ports[1]} PORT2=${ports[2]}
  mkdir -p "$HA_DIR"
  if [[ $(id -u) -eq 0 ]]; then chown "$HA_USER": "$HA_DIR"; fi
  as_pg mkdir -p "$HA_DIR/xdg/config" "$HA_DIR/xdg/data" "$HA_DIR/xdg/run" "$HA_DIR/log"
  as_pg chmod 700 "$HA_DIR/xdg/run"
  local mon="postgres://autoctl_node@127.0.0.1:$MONITOR_PORT/pg_auto_failover?sslmode=disable"

  log "creating monitor on port $MONITOR_PORT (timers: $HA_TIMERS)"
  as_pg timeout 120 pg_autoctl create monitor --pgdata "$HA_DIR/monitor" --pgport "$MONITOR_PORT" \
    --hostname 127.0.0.1 --auth trust --no-ssl --pgctl "$HA_PGBIN/pg_ctl" >>"$HA_DIR/log/create.log" 2>&1
  as_pg pg_autoctl config set --pgdata "$HA_DIR/monitor" postgresql.listen_addresses 127.0.0.1 >/dev/null
  { small_memory_conf; if [[ $HA_TIMERS == fast ]]; then fast_timers_sql; fi; } | as_pg tee -a "$HA_DIR/monitor/postgresql.conf" >/dev/null
  run_bg monitor
  wait_pg "$MONITOR_PORT"

  local i name port
  for i in 0 1; do
    name=${NODES[$i]}; port=$([[ $i == 0 ]] && echo "$PORT1" || echo "$PORT2")
    log "creating $name on port $port"
    as_pg timeout 180 pg_autoctl create postgres --pgdata "$HA_DIR/$name" --pgport "$port" --listen 127.0.0.1 \
      --hostname 127.0.0.1 --name "$name" --dbname "$HA_DB" --auth trust --no-ssl --monitor "$mon" \
      --pgctl "$HA_PGBIN/pg_ctl" >>"$HA_DIR/log/create.log" 2>&1 || die "create $name failed; see $HA_DIR/log/create.log"
    # node2's postgresql.conf is a copy of node1's (pg_basebackup): append only once
    [[ $i == 0 ]] && small_memory_conf | as_pg tee -a "$HA_DIR/$name/postgresql.conf" >/dev/null
    # An isolated primary demotes itself after network_partition_timeout (s); keep it below
    # the monitor's primary_demote_timeout so that the old primary is read-only before the standby is promoted.
    [[ $HA_TIMERS == fast ]] && as_pg pg_autoctl config set --pgdata "$HA_DIR/$name" timeout.network_partition_timeout 3 >/dev/null
    run_bg "$name"
    [[ $i == 0 ]] && wait_pg "$port"
  done

  cat >"$HA_DIR/ha.env" <<EOF
MONITOR_PORT=$MONITOR_PORT
PORT1=$PORT1
PORT2=$PORT2
HA_DB=$HA_DB
DATABASE_URL='postgres://postgres@127.0.0.1:$PORT1,127.0.0.1:$PORT2/$HA_DB?target_session_attrs=read-write&sslmode=disable'
MONITOR_URL='$mon'
EOF
  if [[ $(id -u) -eq 0 ]]; then chown "$HA_USER": "$HA_DIR/ha.env"; fi
}

cmd_up() {
  if [[ -f $HA_DIR/ha.env ]]; then
    load_env
    log "starting existing cluster in $HA_DIR"
    run_bg monitor; wait_pg "$MONITOR_PORT"
    for n in "${NODES[@]}"; do run_bg "$n"; done
  else
    create_cluster
  fi
  cmd_wait "${HA_WAIT:-90}"
  load_env
  local pp; pp=$(writable_node | cut -d' ' -f2)
  cat <<EOF
# Both hosts; the service follows the primary (target_session_attrs=read-write):
export DATABASE_URL='$DATABASE_URL'
# dbmate (npm run db:migrate) reads one host: the current primary's (the service itself
# migrates at start with the URL above). After a failover, ask again: scripts/ha.sh primary-url
export MIGRATE_DATABASE_URL='postgres://postgres@127.0.0.1:$pp/$HA_DB?sslmode=disable'
# Stop: npm run ha:down (add -- --purge to delete the data in $HA_DIR)
EOF
}

stop_one() { # stop the pg_autoctl of a pgdata and wait for it and its postgres to exit
  local name=$1 pid pm i
  pid=$(running_pid "$name") || pid=
  pm=$( [[ -f $HA_DIR/$name/postmaster.pid ]] && head -1 "$HA_DIR/$name/postmaster.pid" || true)
  [[ -n $pid ]] && as_pg pg_autoctl stop --pgdata "$HA_DIR/$name" >/dev/null 2>&1 || true
  for i in $(seq 1 150); do
    { [[ -z $pid ]] || ! kill -0 "$pid" 2>/dev/null; } && { [[ -z $pm ]] || ! kill -0 "$pm" 2>/dev/null; } && return 0
    sleep 0.2
  done
  log "$name did not stop in 30 s: kill -9"
  [[ -n $pid ]] && kill -9 -- "-$pid" 2>/dev/null || true
  [[ -n $pm ]] && kill -9 "$pm" 2>/dev/null || true
}

cmd_down() {
  [[ -f $HA_DIR/ha.env ]] || { log "nothing in $HA_DIR"; return 0; }
  load_env
  # the standby first, so the primary never waits on it; then the primary; the monitor last
  local s p
  s=$(node_in_state secondary | cut -d' ' -f1 || true)
  for n in $s "${NODES[@]}" monitor; do stop_one "$n"; done
  log "stopped"
  if [[ ${1:-} == --purge ]]; then rm -rf "$HA_DIR"; log "removed $HA_DIR"; fi
}

cmd_kill() {
  load_env
  local name=$1 mode=${2:-} pid pm
  port_of "$name" >/dev/null
  if [[ $mode == --postmaster ]]; then
    pm=$(head -1 "$HA_DIR/$name/postmaster.pid")
    kill -9 "$pm"; log "killed postmaster $pm of $name"
  else
    pid=$(running_pid "$name") || die "$name is not running"
    pm=$( [[ -f $HA_DIR/$name/postmaster.pid ]] && head -1 "$HA_DIR/$name/postmaster.pid" || true)
    kill -9 -- "-$pid"                                  # pg_autoctl run and its services
    [[ -n $pm ]] && kill -9 "$pm" 2>/dev/null || true   # the postmaster (same group; belt and braces)
    log "killed $name (pg_autoctl $pid, postmaster ${pm:-none})"
  fi
}

default_timers_sql() {
  cat <<'EOF2'
pgautofailover.health_check_period = 5000
pgautofailover.health_check_timeout = 5000
pgautofailover.health_check_max_retries = 2
pgautofailover.health_check_retry_delay = 2000
pgautofailover.node_considered_unhealthy_timeout = 20000
pgautofailover.primary_demote_timeout = 30000
pgautofailover.startup_grace_period = 10000
EOF2
}

cmd_timers() {
  load_env
  local sql
  case ${1:-} in
    fast) sql=$(fast_timers_sql) ;;
    default) sql=$(default_timers_sql) ;;
    *) die "timers fast|default" ;;
  esac
  # ALTER SYSTEM (postgresql.auto.conf) wins over what creation appended to postgresql.conf.
  # The keepers' timeout.network_partition_timeout is not changed here (it needs a keeper restart).
  local args=() line
  while read -r line; do args+=(-c "alter system set ${line/ = / to }"); done <<<"$sql"
  as_pg psql -XAtq -h 127.0.0.1 -p "$MONITOR_PORT" -d pg_auto_failover -v ON_ERROR_STOP=1 "${args[@]}" -c 'select pg_reload_conf()' >/dev/null
  sleep 0.2
  as_pg psql -XAt -h 127.0.0.1 -p "$MONITOR_PORT" -d pg_auto_failover -c "select name || '=' || setting from pg_settings where name like 'pgautofailover.%' order by 1"
}

cmd=${1:-}; shift || true
case $cmd in
  up) cmd_up ;;
  down) cmd_down "$@" ;;
  status) load_env; as_pg pg_autoctl show state --pgdata "$HA_DIR/monitor" ;;
  url) load_env; echo "$DATABASE_URL" ;;
  wait) cmd_wait "$@" ;;
  primary) load_env; writable_node ;;
  primary-url) load_env; pp=$(writable_node | cut -d" " -f2); [[ -n $pp ]] || die "no primary"; echo "postgres://postgres@127.0.0.1:$pp/$HA_DB?sslmode=disable" ;;
  standby) load_env; node_in_state secondary ;;
  kill) cmd_kill "$@" ;;
  start) load_env; run_bg "${1:?node name}"; log "started $1" ;;
  stop) load_env; stop_one "${1:?node name}" ;;
  timers) cmd_timers "$@" ;;
  psql) load_env; n=${1:?node}; shift; if [[ $n == monitor ]]; then as_pg psql -X -h 127.0.0.1 -p "$MONITOR_PORT" -d pg_auto_failover "$@"; else as_pg psql -X -h 127.0.0.1 -p "$(port_of "$n")" -d "$HA_DB" "$@"; fi ;;
  *) sed -n '2,30p' "$0"; exit 2 ;;
esac
