-- wrk script: POST /api/v1/search with image files as multipart bodies.
-- QUERY_LIST names a file with one image path per line; each connection
-- walks the list from its own offset, so with QUERY_MODE=distinct no image
-- repeats during a run shorter than the list (a cold cache), and with
-- QUERY_MODE=same every request sends the first image (a warm cache).
local boundary = "pixseekloadboundary7MA4YWxkTrZu0gW"
local bodies = {}
local mode = os.getenv("QUERY_MODE") or "distinct"
local threads = {}
local counter = 0

local function multipart(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return "--" .. boundary .. "\r\n" ..
         "Content-Disposition: form-data; name=\"image\"; filename=\"q.jpg\"\r\n" ..
         "Content-Type: application/octet-stream\r\n\r\n" .. data .. "\r\n--" .. boundary .. "--\r\n"
end

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local list = assert(io.open(os.getenv("QUERY_LIST"), "r"))
  local paths = {}
  for line in list:lines() do table.insert(paths, line) end
  list:close()
  -- Each wrk thread takes its own slice of the list.
  local n = tonumber(os.getenv("WRK_THREADS") or "1")
  local per = math.floor(#paths / n)
  local first = id * per + 1
  local last = (mode == "same") and first or (first + per - 1)
  for i = first, last do table.insert(bodies, multipart(paths[i])) end
  next_body = 1
  wrk.method = "POST"
  wrk.path = "/api/v1/search?top_k=10"
  wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. boundary
end

function request()
  local body = bodies[next_body]
  next_body = next_body + 1
  if next_body > #bodies then next_body = 1 end
  return wrk.format(nil, nil, nil, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_s":%.3f,"rps":%.1f,"p50_ms":%.2f,"p90_ms":%.2f,"p99_ms":%.2f,' ..
    '"max_ms":%.2f,"errors":%d,"non_2xx":%d}\n',
    summary.requests, summary.duration / 1e6, summary.requests / (summary.duration / 1e6),
    latency:percentile(50) / 1000, latency:percentile(90) / 1000, latency:percentile(99) / 1000,
    latency.max / 1000, e.connect + e.read + e.write + e.timeout, e.status))
end
