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
  package.preload["norgopolis.native"] =
    assert(package.loadlib(native_so, "luaopen_norgopolis_native"))
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

--- Makes `n` calls one after the other, each started from the previous
--- one's callback, as a plugin chaining requests would. `call(i, finished)`
--- starts call `i` and calls `finished(err)` when it is over; `done` gets
--- `{ wall_ns, samples_ns }`. A failed call ends the bench.
---@param n integer
---@param call fun(i: integer, finished: fun(err: table?))
---@param done fun(result: table)
function M.chain(n, call, done)
  local hrtime = vim.uv.hrtime
  local samples, i, t = {}, 0, 0
  local start = hrtime()
  local step
  step = function()
    i = i + 1
    t = hrtime()
    call(i, function(err)
      samples[i] = hrtime() - t
      if err then
        M.fail(err.code .. ": " .. err.message)
      end
      if i < n then
        step()
      else
        done({ wall_ns = hrtime() - start, samples_ns = samples })
      end
    end)
  end
  step()
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
