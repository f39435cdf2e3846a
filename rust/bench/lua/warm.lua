-- Warm echo round trips from Lua, through the plugin's callback API.
-- Arguments: <native.so> <root> <reps> <warmup> <small calls> <large calls> [module]
-- Prints one JSON line: { small = { {wall_ns, samples_ns = {...}, cpu_us_per_call,
-- switches_per_call}, ... }, large = ... }.

local script_dir = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
package.path = script_dir .. "/?.lua;" .. package.path
local common = require("common")

local native_so, root = arg[1], arg[2]
local reps, warmup = tonumber(arg[3]), tonumber(arg[4])
local small_calls, large_calls = tonumber(arg[5]), tonumber(arg[6])
local module = arg[7] or "echo"
local np = common.load_plugin(native_so, root)

-- Same values as the Rust side: strings of `x` whose MessagePack encoding is
-- 64 bytes (str8) and 64 KiB + 5 bytes (str32).
local small = string.rep("x", 62)
local large = string.rep("x", 64 * 1024)

--- `n` echo calls one after the other, each started from the previous one's
--- on_done, as a plugin chaining requests would.
---@param payload string
---@param n integer
---@param done fun(result: table)
local function chain(payload, n, done)
  common.chain(n, function(_, finished)
    np.invoke(module, "echo", payload, {
      on_value = function(v)
        if #v ~= #payload then
          common.fail(("echo returned %d bytes, sent %d"):format(#v, #payload))
        end
      end,
      on_done = finished,
    })
  end, done)
end

--- This process's CPU time (all threads, the native library's included)
--- in microseconds, and its context switches.
local function usage()
  local u = vim.uv.getrusage()
  local cpu = (u.utime.sec + u.stime.sec) * 1e6 + u.utime.usec + u.stime.usec
  return cpu, u.nvcsw + u.nivcsw
end

local function series(payload, calls)
  common.await(function(done)
    chain(payload, warmup, done)
  end, 600000)
  local out = {}
  for r = 1, reps do
    local cpu0, sw0 = usage()
    out[r] = common.await(function(done)
      chain(payload, calls, done)
    end, 600000)
    local cpu1, sw1 = usage()
    out[r].cpu_us_per_call = (cpu1 - cpu0) / calls
    out[r].switches_per_call = (sw1 - sw0) / calls
  end
  return out
end

local result = { small = series(small, small_calls), large = series(large, large_calls) }
common.say(vim.json.encode(result))
