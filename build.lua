-- Installs norgopolis's native parts (lua/norgopolis/build.lua): a prebuilt
-- archive for this platform, verified by sha256, else a cargo build.
--   lazy.nvim runs this file on install and update (progress in its window);
--   `nvim -l build.lua [auto|download|cargo]` in the plugin's folder runs the
--   same install headless, blocks until done and exits non-zero on failure.
local root = vim.fn.fnamemodify(debug.getinfo(1, "S").source:gsub("^@", ""), ":p:h")
if not package.loaded["norgopolis.build"] then
  package.path = ("%s/lua/?.lua;%s/lua/?/init.lua;%s"):format(root, root, package.path)
end
-- Run as `nvim -l build.lua`, not sourced by a plugin manager.
local script = _G.arg and _G.arg[0] and vim.fn.fnamemodify(_G.arg[0], ":p")
local headless = script == root .. "/build.lua"
local ok, err = require("norgopolis.build").run({
  root = root,
  from = headless and _G.arg[1] or nil,
})
if headless then
  if not ok then
    io.stderr:write("norgopolis: ", tostring(err), "\n")
  end
  os.exit(ok and 0 or 1)
elseif not ok then
  error("norgopolis: " .. tostring(err), 0)
end
