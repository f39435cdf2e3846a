-- Cold start from a fresh Neovim: load the plugin and make the first call
-- (which attaches, starting the server, which starts the module).
-- Arguments: <native.so> <root> [bare]
-- Prints "result <ns since the script started> <value>"; with "bare" it
-- prints "result 0 -" at once (Neovim's own start-up, for comparison).

local t0 = vim.uv.hrtime()
local script_dir = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h")
package.path = script_dir .. "/?.lua;" .. package.path
local common = require("common")

if arg[3] == "bare" then
  common.say("result 0 -")
  return
end

local np = common.load_plugin(arg[1], arg[2])
local r = common.await(function(done)
  np.call("echo", "echo", "hi", function(err, values)
    done({ err = err, values = values, t = vim.uv.hrtime() })
  end)
end, 30000)
if r.err then
  common.fail(r.err.code .. ": " .. r.err.message)
end
common.say(("result %d %s"):format(r.t - t0, tostring(r.values[1])))
