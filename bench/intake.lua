-- wrk script for bench/intake.py: signed GitHub tag pushes from a pool file.
--
-- Usage: wrk -t T -c C -d D -s bench/intake.lua URL -- POOL_FILE T
-- Each line of POOL_FILE is "body<TAB>delivery id<TAB>X-Hub-Signature-256". Thread i
-- sends lines i, i+T, i+2T, ... in turn (wrapping around at the end), so a pool of
-- unique pushes gives unique requests across threads. Every answer's status is
-- counted, and done() prints one line "BENCH {json}" with the totals and latency
-- percentiles (microseconds) for intake.py to read.

local pool = {}
local position = 0
local threads = {}
counts = {}

function setup(thread)
  thread:set("id", #threads)
  table.insert(threads, thread)
end

local function load(path, step, me)
  local n = 0
  for line in io.lines(path) do
    if step == 0 or n % step == me then
      local body, delivery, sig = line:match("^(.-)\t(.-)\t(.-)$")
      local headers = {
        ["X-GitHub-Event"] = "push",
        ["X-GitHub-Delivery"] = delivery,
        ["X-Hub-Signature-256"] = sig,
        ["User-Agent"] = "GitHub-Hookshot/bench",
        ["Content-Type"] = "application/json",
      }
      pool[#pool + 1] = wrk.format("POST", nil, headers, body)
    end
    n = n + 1
  end
end

function init(args)
  load(args[1], tonumber(args[2]), id)
  if #pool == 0 then -- fewer lines than threads: every thread sends them all
    load(args[1], 0, id)
  end
end

function request()
  position = position % #pool + 1
  return pool[position]
end

function response(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

function done(summary, latency, requests)
  local statuses = {}
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("counts")) do
      local key = tostring(status)
      statuses[key] = (statuses[key] or 0) + n
    end
  end
  local parts = {}
  for status, n in pairs(statuses) do
    parts[#parts + 1] = string.format('"%s": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH {"requests": %d, "duration_us": %d, "statuses": {%s}, ' ..
    '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d}, ' ..
    '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "mean": %.1f, "max": %d}}\n',
    summary.requests, summary.duration, table.concat(parts, ", "),
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.mean, latency.max))
end
