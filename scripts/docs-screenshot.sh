#!/usr/bin/env bash
# Starts the API (no database needed for /swagger), opens the docs page in
# headless Chromium with every host but 127.0.0.1 unreachable, saves a
# screenshot, and fails if the page asked for anything outside the service.
# Usage: scripts/docs-screenshot.sh [out.png] [path]   (path: /swagger or /swagger/)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-docs-screenshot.png}
page=${2:-/swagger}
work=$(mktemp -d)
port=$(node -e 'const s=require("net").createServer().listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})')

PORT=$port timeout 120 npx bun scripts/serve-docs.ts >"$work/server.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 1 100); do curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done

# --host-resolver-rules: any other host fails to resolve, as on a machine with no network.
timeout 90 chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --host-resolver-rules="MAP * ~NOTFOUND, EXCLUDE 127.0.0.1" \
  --user-data-dir="$work/profile" --log-net-log="$work/netlog.json" \
  --virtual-time-budget=15000 --window-size=1280,2000 \
  --screenshot="$out" "http://127.0.0.1:$port$page" 2>"$work/chromium.log" || { cat "$work/chromium.log" >&2; exit 1; }

# Every request the page made (Chromium's own background requests have no
# initiator origin and are left out), from Chromium's net log.
node -e '
  const text = require("fs").readFileSync(process.argv[1], "utf8").trim().replace(/,$/, "")
  const log = JSON.parse(text.endsWith("}") ? text : text + "]}")
  const START = log.constants.logEventTypes.URL_REQUEST_START_JOB
  const urls = new Set(log.events.filter((e) => e.type === START && e.params?.url && /^[a-z]+:\/\//.test(e.params.initiator ?? ""))
    .map((e) => e.params.url))
  for (const url of urls) console.log("page requested:", url)
  const outside = [...urls].filter((url) => !url.startsWith(process.argv[2]))
  if (urls.size === 0 || outside.length) { console.error("requests outside the service:", outside); process.exit(1) }
' "$work/netlog.json" "http://127.0.0.1:$port/"
echo "screenshot: $out"
