-- Shared by the bench scripts: load the plugin with the native library the
-- bench names (the release build, without replacing lua/norgopolis/native.so,
-- which the debug specs use), and report to the bench on stdout.
--
-- Scripts run as `nvim --headless -u NONE -i NONE -l <script> <native.so> <root> ...`
-- with NORGOPOLIS_SOCKET and friends set by the bench.

local M = {}

--- Makes `require("norgopolis")` use the library at `native_so`.
---@param native_so string
---@param root string the repository root (holding lua/norgopolis)
function M.load_plugin(native_so, root)
  package.preload["norgopolis.native"] = assert(package.loadlib(native_so, "luaopen_norgopolis_native"))
  vim.opt.rtp:prepend(root)
  local np = require("norgopolis")
  np.setup({ log_level = "off" })
  return np
end

--- Writes one line to the bench.
---@param line string
function M.say(line)
  io.stdout:write(line, "\n")
  io.stdout:flush()
end

--- Reports a failure and exits non-zero.
---@param what string
function M.fail(what)
  io.stderr:write("bench: ", what, "\n")
  io.stderr:flush()
  os.exit(1)
end

--- Runs `start(done)` and processes events until it calls `done(result)`.
---@param start fun(done: fun(result: any))
---@param timeout_ms integer
---@return any
function M.await(start, timeout_ms)
  local result
  start(function(r)
    result = r
  end)
  if not vim.wait(timeout_ms, function()
    return result ~= nil
  end, 1) then
    M.fail("timed out")
  end
  return result
end

return M
