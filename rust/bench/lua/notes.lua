-- `search` top-20 on the notes module from Lua, through the plugin's
-- callback API, one call after the other.
-- Arguments: <native.so> <root> <reps> <calls> <queries separated by ";">
-- Prints one JSON line: { reps = { { wall_ns, samples_ns = {...} }, ... } }.

local script_dir = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
package.path = script_dir .. "/?.lua;" .. package.path
local common = require("common")

local native_so, root = arg[1], arg[2]
local reps, calls = tonumber(arg[3]), tonumber(arg[4])
local queries = vim.split(arg[5], ";", { plain = true })
local np = common.load_plugin(native_so, root)

--- `n` searches, each started from the previous one's callback.
---@param n integer
---@param done fun(result: table)
local function chain(n, done)
  common.chain(n, function(i, finished)
    local query = queries[(i - 1) % #queries + 1]
    np.call("notes", "search", { query = query, limit = 20 }, finished)
  end, done)
end

-- Warm up (the first call attaches), then measure.
common.await(function(done)
  chain(20, done)
end, 60000)
local out = {}
for r = 1, reps do
  out[r] = common.await(function(done)
    chain(calls, done)
  end, 600000)
end
common.say(vim.json.encode({ reps = out }))
vim.cmd("qa!")
