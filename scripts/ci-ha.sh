#!/usr/bin/env bash
# scripts/ci-ha.sh — the failover tests on PostgreSQL 15 from Debian's packages (npm run test:ha).
#
# Installs what is missing (postgresql-15, postgresql-15-auto-failover, jq, iproute2; as root, with
# apt-get), then runs, with WAITRESS_HA=1:
#   tests/faults/failover-manual.test.ts  a primary and a synchronous standby, promotion by hand
#   tests/faults/failover-engine.test.ts  pg_auto_failover: a monitor and two nodes, promotion by the engine
# Each test starts its own servers (scripts/manual-standby.sh, scripts/ha.sh) in a temp directory on
# ports below 32768, and stops and deletes them at the end. The servers run as the postgres user.
# Needs node_modules (npm install) first.
set -euo pipefail
cd "$(dirname "$0")/.."

pgbin=/usr/lib/postgresql/15/bin
missing=()
[[ -x $pgbin/postgres && -x $pgbin/pg_basebackup ]] || missing+=(postgresql-15)
command -v pg_autoctl >/dev/null 2>&1 || missing+=(postgresql-15-auto-failover)
command -v jq >/dev/null 2>&1 || missing+=(jq)
command -v ss >/dev/null 2>&1 || missing+=(iproute2)
if (( ${#missing[@]} )); then
  [[ $(id -u) -eq 0 ]] || { echo "ci-ha.sh: missing ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2; exit 1; }
  echo "== installing ${missing[*]}"
  # No "main" cluster on port 5432: the tests start the servers they need.
  if [[ ! -e /etc/postgresql-common/createcluster.conf ]]; then
    mkdir -p /etc/postgresql-common/createcluster.d
    echo 'create_main_cluster = false' > /etc/postgresql-common/createcluster.d/waitress-ci.conf
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
id postgres >/dev/null 2>&1 || { echo "ci-ha.sh: no postgres user (it comes with the postgresql-15 package)" >&2; exit 1; }

echo "== failover tests (PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}'), $(pg_autoctl --version 2>/dev/null | head -1))"
WAITRESS_HA=1 ./node_modules/.bin/bun test --timeout 900000 tests/faults/failover-manual.test.ts tests/faults/failover-engine.test.ts
