#!/usr/bin/env bash
# scripts/manual-standby.sh — a primary and a synchronous streaming standby on 127.0.0.1, no failover
# engine: failover is `kill -9` + `pg_ctl promote`, by hand or from a test. The fast CI path.
#
#   manual-standby.sh up             create on first use (initdb + pg_basebackup), start both, wait for
#                                    sync replication; print the multi-host DATABASE_URL
#   manual-standby.sh down [--purge] stop both (and delete the data with --purge)
#   manual-standby.sh status         who is primary, replication state
#   manual-standby.sh url            DATABASE_URL (multi-host, target_session_attrs=read-write)
#   manual-standby.sh kill NAME      kill -9 the postmaster of NAME (a or b)
#   manual-standby.sh promote NAME   promote NAME (pg_ctl promote -w); it runs without a sync standby
#   manual-standby.sh rejoin NAME [--rewind]
#                                    make a dead/stopped old primary NAME a sync standby of the other: a fresh
#                                    pg_basebackup (or pg_rewind first with --rewind, falling back to the base
#                                    backup if the rewound node does not start); sync replication is required again
#   manual-standby.sh async|sync     on the current primary: synchronous_standby_names '' or the standby's name
#   manual-standby.sh primary-url  single-host URL of the current primary (for dbmate: no multi-host URLs)
#   manual-standby.sh psql NAME [psql args...]
#
# Environment: MS_DIR (default /tmp/waitress-ms), MS_DB (waitress), MS_PORTS "A,B" (default: two free
# ports from MS_PORT_FROM, default 25500,
# below the ephemeral port range), MS_PGBIN, MS_USER (default postgres, when run as root).
#
# Layout: nodes "a" and "b". Which one is primary is not fixed: it is whichever is not in recovery.
# synchronous_standby_names is set with ALTER SYSTEM on the primary only after the standby exists,
# and cleared on a node before it is promoted, so a promoted standby never waits for a standby it
# does not have. Auth is trust on 127.0.0.1: for a test machine only.
set -euo pipefail

MS_DIR=${MS_DIR:-/tmp/waitress-ms}
MS_DB=${MS_DB:-waitress}
MS_USER=${MS_USER:-postgres}
MS_PORT_FROM=${MS_PORT_FROM:-25500}
if [[ -z ${MS_PGBIN:-} ]]; then
  if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then MS_PGBIN=/usr/lib/postgresql/15/bin
  else MS_PGBIN=$(pg_config --bindir); fi
fi

log() { printf '%s manual-standby.sh: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "$*"; exit 1; }

as_pg() {
  local envv=(PATH="$MS_PGBIN:/usr/bin:/bin" PGCONNECT_TIMEOUT=3)
  if [[ $(id -u) -eq 0 ]]; then runuser -u "$MS_USER" -- env "${envv[@]}" "$@"
  else env "${envv[@]}" "$@"; fi
}
port_free() {
  local p=$1
  [[ -z $(ss -Htan "sport = :$p" 2>/dev/null) ]] && [[ ! -e $MS_DIR/sock/.s.PGSQL.$p ]]
}
load_env() { [[ -f $MS_DIR/ms.env ]] || die "no cluster in $MS_DIR (run: manual-standby.sh up)"; . "$MS_DIR/ms.env"; }
port_of() { case $1 in a) echo "$PORT_A" ;; b) echo "$PORT_B" ;; *) die "node is a or b" ;; esac; }
other() { [[ $1 == a ]] && echo b || echo a; }
q() { # q NODE SQL...: psql -Atq against a node
  local n=$1; shift
  as_pg psql -XAtq -h 127.0.0.1 -p "$(port_of "$n")" -d "$MS_DB" -v ON_ERROR_STOP=1 "$@"
}
alive() { as_pg pg_isready -q -h 127.0.0.1 -p "$(port_of "$1")"; }
in_recovery() { [[ $(q "$1" -c 'select pg_is_in_recovery()' 2>/dev/null) == t ]]; }
primary_of() { # the live node not in recovery
  for n in a b; do alive "$n" && ! in_recovery "$n" && { echo "$n"; return 0; }; done
  return 1
}
pgctl() { local n=$1; shift; as_pg pg_ctl -D "$MS_DIR/$n" -l "$MS_DIR/log/$n.log" "$@"; }
start_node() {
  local n=$1
  alive "$n" && return 0
  pgctl "$n" -w -t 60 -o "-p $(port_of "$n") -k $MS_DIR/sock" start >/dev/null
}

node_conf() {
  cat <<EOF
# manual-standby.sh
listen_addresses = '127.0.0.1'
shared_buffers = 128MB
max_connections = 200
wal_level = replica
max_wal_senders = 10
max_replication_slots = 10
wal_keep_size = 1GB
wal_log_hints = on            # pg_rewind of an old primary
hot_standby = on
hot_standby_feedback = on
synchronous_commit = on       # commit returns after the sync standby has flushed the WAL
wal_sender_timeout = 5s       # a dead standby's walsender goes away quickly
wal_receiver_timeout = 5s
logging_collector = off
EOF
}

wait_sync() { # wait until the primary sees its standby as sync
  local p=$1 limit=${2:-60} start=$SECONDS st
  while (( SECONDS - start < limit )); do
    st=$(q "$p" -c "select string_agg(application_name || ':' || sync_state, ',') from pg_stat_replication" 2>/dev/null || true)
    [[ $st == *":sync"* || $st == *":quorum"* ]] && { log "primary $p: replication $st"; return 0; }
    sleep 0.3
  done
  die "no sync standby on $p after ${limit}s (pg_stat_replication: ${st:-none})"
}

make_standby() { # make_standby NODE FROM: base backup of FROM into NODE, start as standby
  local n=$1 from=$2
  as_pg rm -rf "$MS_DIR/$n"
  as_pg pg_basebackup -h 127.0.0.1 -p "$(port_of "$from")" -D "$MS_DIR/$n" -X stream -c fast \
    -C -S "standby_$n" -R -d "application_name=standby_$n" >/dev/null
  start_node "$n"
}

set_sync() { # set_sync PRIMARY on|off
  local p=$1 v=''
  [[ $2 == on ]] && v="standby_$(other "$p")"
  q "$p" -c "alter system set synchronous_standby_names = '$v'" -c 'select pg_reload_conf()' >/dev/null
}

cmd_up() {
  if [[ -f $MS_DIR/ms.env ]]; then
    load_env
    for n in a b; do [[ -f $MS_DIR/$n/standby.signal ]] || start_node "$n"; done
    for n in a b; do [[ -f $MS_DIR/$n/standby.signal ]] && start_node "$n"; done
  else
    local ports
    if [[ -n ${MS_PORTS:-} ]]; then IFS=, read -r -a ports <<<"$MS_PORTS"
    else ports=(); local p=$MS_PORT_FROM; while (( ${#ports[@]} < 2 )); do port_free "$p" && ports+=("$p"); p=$((p + 1)); done; fi
    PORT_A=${ports[0]} PORT_B=${ports[1]}
    mkdir -p "$MS_DIR"; if [[ $(id -u) -eq 0 ]]; then chown "$MS_USER": "$MS_DIR"; fi
    as_pg mkdir -p "$MS_DIR/log" "$MS_DIR/sock"
    cat >"$MS_DIR/ms.env" <<EOF
PORT_A=$PORT_A
PORT_B=$PORT_B
MS_DB=$MS_DB
DATABASE_URL='postgres://postgres@127.0.0.1:$PORT_A,127.0.0.1:$PORT_B/$MS_DB?target_session_attrs=read-write&sslmode=disable'
EOF
    log "initdb a (port $PORT_A)"
    as_pg initdb -D "$MS_DIR/a" -A trust -U postgres >/dev/null
    node_conf | as_pg tee -a "$MS_DIR/a/postgresql.conf" >/dev/null
    start_node a
    q a -d postgres -c "create database $MS_DB" >/dev/null
    log "pg_basebackup a -> b (port $PORT_B)"
    make_standby b a
    set_sync a on
  fi
  load_env
  local p; p=$(primary_of) || die "no primary is up"
  wait_sync "$p" 60
  echo "$DATABASE_URL"
}

cmd_down() {
  [[ -f $MS_DIR/ms.env ]] || { log "nothing in $MS_DIR"; return 0; }
  load_env
  # the standby first (a fast shutdown of a primary waits for its walsenders)
  for n in a b; do [[ -f $MS_DIR/$n/standby.signal ]] && pgctl "$n" -w -t 60 -m fast stop >/dev/null 2>&1 || true; done
  for n in a b; do [[ -f $MS_DIR/$n/postmaster.pid ]] && pgctl "$n" -w -t 60 -m fast stop >/dev/null 2>&1 || true; done
  log "stopped"
  if [[ ${1:-} == --purge ]]; then rm -rf "$MS_DIR"; log "removed $MS_DIR"; fi
}

cmd_status() {
  load_env
  for n in a b; do
    if alive "$n"; then
      if in_recovery "$n"; then echo "$n port $(port_of "$n"): standby, receiving $(q "$n" -c "select coalesce(status,'-') from pg_stat_wal_receiver")"
      else echo "$n port $(port_of "$n"): primary, synchronous_standby_names='$(q "$n" -c 'show synchronous_standby_names')', replicas: $(q "$n" -c "select coalesce(string_agg(application_name || ':' || state || '/' || sync_state, ','), 'none') from pg_stat_replication")"; fi
    else echo "$n port $(port_of "$n"): down"; fi
  done
}

cmd_promote() {
  load_env
  local n=$1
  # A promoted node must not wait for a standby it does not have: clear the setting first
  # (ALTER SYSTEM works on a standby: it only writes postgresql.auto.conf).
  q "$n" -c "alter system set synchronous_standby_names = ''" -c 'select pg_reload_conf()' >/dev/null
  as_pg pg_ctl -D "$MS_DIR/$n" -w -t 60 promote >/dev/null
  log "promoted $n"
}

cmd_rejoin() {
  load_env
  local n=$1 how=${2:-} p; p=$(other "$n")
  alive "$p" && ! in_recovery "$p" || die "$p is not a live primary"
  if alive "$n"; then pgctl "$n" -w -m fast stop >/dev/null; fi
  # wait for the killed postmaster's orphaned backends to exit
  local i; for i in $(seq 1 50); do pgrep -u "$MS_USER" -f "postgres -D $MS_DIR/$n( |$)" >/dev/null || break; sleep 0.1; done
  local rewound=no
  if [[ $how == --rewind ]]; then
    # pg_rewind (PG 13+) first runs crash recovery of a killed target in single-user mode by itself
    q "$p" -c "select pg_create_physical_replication_slot('standby_$n')" >/dev/null 2>&1 || true
    if as_pg pg_rewind -D "$MS_DIR/$n" --source-server="host=127.0.0.1 port=$(port_of "$p") user=postgres dbname=postgres" >>"$MS_DIR/log/rewind.log" 2>&1; then
      as_pg touch "$MS_DIR/$n/standby.signal"
      as_pg tee -a "$MS_DIR/$n/postgresql.auto.conf" >/dev/null <<EOF
primary_conninfo = 'host=127.0.0.1 port=$(port_of "$p") user=postgres application_name=standby_$n'
primary_slot_name = 'standby_$n'
synchronous_standby_names = ''
EOF
      if start_node "$n" 2>/dev/null; then rewound=yes; else log "rewound $n did not start (see $MS_DIR/log/$n.log)"; fi
    else
      log "pg_rewind failed (see $MS_DIR/log/rewind.log)"
    fi
  fi
  if [[ $rewound == no ]]; then
    # a fresh base backup: slower on big data, but always works (CI data is small)
    q "$p" -c "select pg_drop_replication_slot('standby_$n') from pg_replication_slots where slot_name = 'standby_$n'" >/dev/null 2>&1 || true
    make_standby "$n" "$p"
  fi
  set_sync "$p" on
  wait_sync "$p" 60
}

cmd=${1:-}; shift || true
case $cmd in
  up) cmd_up ;;
  down) cmd_down "$@" ;;
  status) cmd_status ;;
  url) load_env; echo "$DATABASE_URL" ;;
  kill) load_env; n=${1:?a|b}; pm=$(head -1 "$MS_DIR/$n/postmaster.pid"); kill -9 "$pm"; log "killed postmaster $pm of $n" ;;
  promote) cmd_promote "${1:?a|b}" ;;
  rejoin) cmd_rejoin "${1:?a|b}" "${2:-}" ;;
  async) load_env; set_sync "$(primary_of)" off; log "synchronous_standby_names = ''" ;;
  sync) load_env; p=$(primary_of); set_sync "$p" on; wait_sync "$p" 30 ;;
  primary) load_env; p=$(primary_of) && echo "$p $(port_of "$p")" ;;
  primary-url) load_env; p=$(primary_of) || die "no primary"; echo "postgres://postgres@127.0.0.1:$(port_of "$p")/$MS_DB?sslmode=disable" ;;
  psql) load_env; n=${1:?a|b}; shift; as_pg psql -X -h 127.0.0.1 -p "$(port_of "$n")" -d "$MS_DB" "$@" ;;
  *) sed -n '2,25p' "$0"; exit 2 ;;
esac
