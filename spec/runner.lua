-- Runs the busted specs inside Neovim:
--   nvim --headless -u NONE -i NONE -l spec/runner.lua spec
-- Exits non-zero when any spec fails or errors.
package.path = "/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;" .. package.path
package.cpath = "/usr/lib/x86_64-linux-gnu/lua/5.1/?.so;" .. package.cpath

local root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:sub(2), ":p:h:h")
package.path = root .. "/spec/?.lua;" .. package.path

local helpers = require("helpers")
-- Isolate everything the plugin and a server touch before anything loads.
helpers.isolate(root)

-- busted ends the process itself (os.exit) when all specs pass, and raises
-- when some fail; either way the server is stopped and the temp dir removed.
local real_exit = os.exit
local function finish(code)
  pcall(helpers.teardown)
  real_exit(code)
end
os.exit = function(code)
  finish((code == true or code == 0 or code == nil) and 0 or 1)
end

local ok, err = pcall(require("busted.runner"), { standalone = false })
if not ok and err ~= nil then
  io.stderr:write(tostring(err) .. "\n")
end
finish(ok and 0 or 1)
