-- wrk script for benchmarks/gateway_bench.py: signed webhooks, each sent once.
--
-- Environment (read by every Lua state wrk makes: the main one and one per thread):
--   GATEWAY_BENCH_FILE     lines "path TAB body TAB header TAB value [TAB header TAB value ...]"
--   GATEWAY_BENCH_RATE     requests/s for the whole run, paced by delay(); 0: unpaced
--   GATEWAY_BENCH_THREADS  wrk's -t (thread k sends lines k, k + t, k + 2t, ...)
--   GATEWAY_BENCH_SECONDS  how long to hand out requests (wrk's -d must leave time to drain)
--   GATEWAY_BENCH_ACCEPTED the statuses of a stored delivery, comma-separated (default 202;
--                          a mix of providers: 202,204,200)
--
-- Every request is sent at most once. After GATEWAY_BENCH_SECONDS, or when its lines
-- are used up, a thread hands out no more (a connection asking for one gets an empty
-- request and sends nothing) and stops once every request it sent was answered, so
-- the answers counted are all the requests sent: a run is bounded in time and count.
-- wrk itself runs for its -d whatever the threads do: the rate is the answers over the
-- time from a thread's first request to its last answer ("window_us"). Paced: each thread keeps a
-- schedule of send times at rate/threads and delay() waits for the next slot, so the
-- offered load is a fixed rate whatever the latency (behind schedule, it sends at once).
-- done() prints one line "GATEWAY_BENCH {json}" with the figures the benchmark reads.

local ffi = require("ffi")
ffi.cdef [[
typedef struct { long tv_sec; long tv_nsec; } gb_timespec;
int clock_gettime(int clk_id, gb_timespec *tp);
]]
local ts = ffi.new("gb_timespec")
local function now_ms()
   ffi.C.clock_gettime(1, ts) -- CLOCK_MONOTONIC
   return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
end

local rate = tonumber(os.getenv("GATEWAY_BENCH_RATE") or "0")
local nthreads = tonumber(os.getenv("GATEWAY_BENCH_THREADS") or "1")
local seconds = tonumber(os.getenv("GATEWAY_BENCH_SECONDS") or "10")
-- the statuses a new delivery is answered with (Alipay 200 "success", WeChat Pay 204)
local accepted_status = {}
for code in string.gmatch(os.getenv("GATEWAY_BENCH_ACCEPTED") or "202", "%d+") do
   accepted_status[tonumber(code)] = true
end

local threads = {}
local next_id = 0

function setup(thread)
   thread:set("id", next_id)
   next_id = next_id + 1
   table.insert(threads, thread)
end

local function split(line)
   local fields, start = {}, 1
   while true do
      local i = string.find(line, "\t", start, true)
      if not i then
         fields[#fields + 1] = string.sub(line, start)
         return fields
      end
      fields[#fields + 1] = string.sub(line, start, i - 1)
      start = i + 1
   end
end

function init(args)
   local host = wrk.headers["Host"]
   reqs = {}
   local k = 0
   for line in io.lines(os.getenv("GATEWAY_BENCH_FILE")) do
      if k % nthreads == id then
         local f = split(line)
         local headers = { ["Host"] = host, ["Content-Type"] = "application/json" }
         for j = 3, #f - 1, 2 do
            headers[f[j]] = f[j + 1]
         end
         reqs[#reqs + 1] = wrk.format("POST", f[1], headers, f[2])
      end
      k = k + 1
   end
   total = #reqs
   sent = 0      -- webhooks handed out
   answered = 0  -- webhooks answered
   accepted = 0  -- 202: stored in Kafka
   duplicate = 0 -- 200: a redelivery (none expected: every delivery is unique)
   other = 0     -- anything else
   exhausted = 0 -- 1 if the lines ran out before the time did
   deadline = nil
   first_ms = 0
   last_ms = 0
   verified = id ~= 0
end

function request()
   if not verified then
      -- wrk calls thread 0's request() once before the run, to check what it returns
      verified = true
      return reqs[1]
   end
   local now = now_ms()
   if deadline == nil then
      deadline = now + 1000 * seconds
      first_ms = now
   end
   if sent >= total or now >= deadline then
      if sent >= total and now < deadline then
         exhausted = 1
      end
      if answered >= sent then
         wrk.thread:stop()
      end
      return ""  -- parks this connection: nothing is sent, nothing is awaited
   end
   sent = sent + 1
   return reqs[sent]
end

function response(status, headers, body)
   answered = answered + 1
   last_ms = now_ms()
   if status == 200 and body and string.find(body, '"duplicate"', 1, true) then
      duplicate = duplicate + 1
   elseif accepted_status[status] then
      accepted = accepted + 1
   else
      other = other + 1
   end
   if answered >= sent and (sent >= total or last_ms >= deadline) then
      wrk.thread:stop()
   end
end

if rate > 0 then
   local interval = 1000.0 * nthreads / rate
   local slot = nil
   function delay()
      local now = now_ms()
      if slot == nil then
         slot = now
      end
      local wait = slot - now
      slot = slot + interval
      if wait <= 0 or (deadline ~= nil and now >= deadline) then
         return 0
      end
      return math.floor(wait)
   end
end

function done(summary, latency, requests)
   local c = { accepted = 0, duplicate = 0, other = 0, exhausted = 0, sent = 0 }
   local first, last = nil, 0
   for _, t in ipairs(threads) do
      for name, _ in pairs(c) do
         c[name] = c[name] + (t:get(name) or 0)
      end
      local f = t:get("first_ms")
      if f and f > 0 and (first == nil or f < first) then
         first = f
      end
      last = math.max(last, t:get("last_ms") or 0)
   end
   local window = first and math.max(0, last - first) * 1000 or 0
   local e = summary.errors
   io.write(string.format(
      'GATEWAY_BENCH {"responses":%d,"duration_us":%d,"window_us":%d,"accepted":%d,"duplicate":%d,' ..
      '"other":%d,"exhausted":%d,"sent":%d,"errors_connect":%d,"errors_read":%d,' ..
      '"errors_write":%d,"errors_status":%d,"errors_timeout":%d,"p50_us":%d,"p90_us":%d,' ..
      '"p99_us":%d,"p999_us":%d,"max_us":%d,"mean_us":%.1f}\n',
      summary.requests, summary.duration, window, c.accepted, c.duplicate, c.other, c.exhausted,
      c.sent, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency:percentile(99.9), latency.max, latency.mean))
end
