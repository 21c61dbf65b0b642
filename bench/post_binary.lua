-- wrk script for bench/serve.py: POST one prebuilt Open Inference Protocol request with binary tensor data
-- ($BODY_FILE, its JSON header $HEADER_LENGTH bytes long) over and over; done() prints the same machine-readable
-- line as ../shared/peers/post.lua.
local req

init = function(args)
  local file = assert(io.open(os.getenv("BODY_FILE"), "rb"))
  local body = file:read("*a")
  file:close()
  local headers = {
    ["Content-Type"] = "application/octet-stream",
    ["Inference-Header-Content-Length"] = os.getenv("HEADER_LENGTH"),
  }
  req = wrk.format("POST", nil, headers, body)
end

request = function()
  return req
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "WRKJSON={\"requests\":%d,\"duration_us\":%d,\"p50_us\":%d,\"p90_us\":%d,\"p99_us\":%d,\"max_us\":%d,\"mean_us\":%.1f,\"err_connect\":%d,\"err_read\":%d,\"err_write\":%d,\"err_status\":%d,\"err_timeout\":%d}\n",
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout))
end
