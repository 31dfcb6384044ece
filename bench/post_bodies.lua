-- wrk script of the query-path benchmark (bench/wrk_load.py runs it).
--
--   wrk -t1 -c32 -d8s --latency -s bench/post_bodies.lua URL -- PATH BODIES [TOKEN] [SEQS]
--
-- Posts the JSON bodies of the file BODIES (one a line) to PATH, each thread walking the pool
-- from its own random start, so that consecutive requests ask for different subjects and no
-- cache can answer them. TOKEN, when not empty, goes out as a bearer token. Counts 200 answers
-- and the others by status; with SEQS, collects the seq of every 200 answer's
-- Dsgw-Record-Id (calls/N) and writes them to the file SEQS, one a line, when wrk is done.
-- Prints one line "WRKJSON {...}" with the counts and the latency percentiles (µs).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("id", #threads)
end

function init(args)
  path = args[1]
  bodies = {}
  for line in io.lines(args[2]) do
    if #line > 0 then
      bodies[#bodies + 1] = line
    end
  end
  headers = { ["Content-Type"] = "application/json" }
  if args[3] and #args[3] > 0 then
    headers["Authorization"] = "Bearer " .. args[3]
  end
  seqs_file = args[4] or ""
  collect = #seqs_file > 0
  math.randomseed(os.time() * 1000 + id)
  index = math.random(#bodies)
  ok, missing, shown = 0, 0, false
  statuses, seqs = {}, {}
end

function request()
  index = index % #bodies + 1
  return wrk.format("POST", path, headers, bodies[index])
end

function response(status, hdrs, body)
  if status == 200 then
    ok = ok + 1
    if collect then
      local seq = string.match(hdrs["Dsgw-Record-Id"] or "", "^calls/(%d+)$")
      if seq then
        seqs[#seqs + 1] = seq
      else
        missing = missing + 1
      end
    end
  else
    local key = tostring(status)
    statuses[key] = (statuses[key] or 0) + 1
    if not shown then
      shown = true
      io.stderr:write("first non-200 answer: " .. status .. " " .. string.sub(body, 1, 400) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local ok_total, missing_total, statuses_total = 0, 0, {}
  local out = nil
  if #threads > 0 and threads[1]:get("collect") then
    out = assert(io.open(threads[1]:get("seqs_file"), "w"))
  end
  for _, thread in ipairs(threads) do
    ok_total = ok_total + thread:get("ok")
    missing_total = missing_total + thread:get("missing")
    for status, n in pairs(thread:get("statuses")) do
      statuses_total[status] = (statuses_total[status] or 0) + n
    end
    if out then
      for _, seq in ipairs(thread:get("seqs")) do
        out:write(seq, "\n")
      end
    end
  end
  if out then
    out:close()
  end
  local parts = {}
  for status, n in pairs(statuses_total) do
    parts[#parts + 1] = string.format('"%s": %d', status, n)
  end
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "ok": %d, "statuses": {%s}, '
      .. '"missing_record_header": %d, "socket_errors": {"connect": %d, "read": %d, '
      .. '"write": %d, "timeout": %d}, "latency_us": {"p50": %d, "p95": %d, "p99": %d, '
      .. '"max": %d, "mean": %.1f}}\n',
    summary.requests, summary.duration, ok_total, table.concat(parts, ", "), missing_total,
    e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max,
    latency.mean
  ))
end
