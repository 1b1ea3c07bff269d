-- wrk script of the bench (bench/wrk.ts starts it): each connection POSTs the
-- next body of a file, one buyer per request, never one twice.
--   wrk -s bench/wrk.lua <url> -- <bodies file> <threads> <path>
-- Thread t takes lines t, t + threads, t + 2 * threads, ... of the file.
-- done() prints one JSON line: requests sent, responses by status (and code),
-- latency percentiles in ms, and whether a thread ran out of bodies.

local threads = {}
local counter = 0

function setup(thread)
  thread:set("tid", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local file, nthreads = args[1], tonumber(args[2])
  path = args[3]
  bodies = {}
  local i = 0
  for line in io.lines(file) do
    if i % nthreads == tid then bodies[#bodies + 1] = line end
    i = i + 1
  end
  sent = 0
  exhausted = 0
  counts = {}
  headers = { ["Content-Type"] = "application/json" }
end

function request()
  sent = sent + 1
  local body = bodies[sent]
  if body == nil then
    exhausted = 1
    return wrk.format("GET", "/healthz")
  end
  return wrk.format("POST", path, headers, body)
end

function response(status, headers, body)
  local key = tostring(status)
  if status ~= 201 and body then
    local code = body:match('"code":"(%w+)"')
    if code then key = key .. " " .. code end
  end
  counts[key] = (counts[key] or 0) + 1
end

local function json_counts(all)
  local parts = {}
  for k, v in pairs(all) do parts[#parts + 1] = string.format('"%s":%d', k, v) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local all, total_sent, ran_out, max_sent = {}, 0, 0, 0
  for _, thread in ipairs(threads) do
    local c = thread:get("counts")
    for k, v in pairs(c) do all[k] = (all[k] or 0) + v end
    total_sent = total_sent + thread:get("sent")
    max_sent = math.max(max_sent, thread:get("sent"))
    ran_out = math.max(ran_out, thread:get("exhausted"))
  end
  local e = summary.errors
  io.write(string.format(
    '{"event":"done","sent":%d,"maxSentPerThread":%d,"threads":%d,"counts":%s,"durationUs":%d,"requests":%d,"p50":%.3f,"p95":%.3f,"p99":%.3f,"max":%.3f,' ..
    '"socketErrors":{"connect":%d,"read":%d,"write":%d,"timeout":%d},"exhausted":%s}\n',
    total_sent, max_sent, #threads, json_counts(all), summary.duration, summary.requests,
    latency:percentile(50) / 1000, latency:percentile(95) / 1000, latency:percentile(99) / 1000, latency.max / 1000,
    e.connect, e.read, e.write, e.timeout, ran_out == 1 and "true" or "false"))
end
