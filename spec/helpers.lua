-- Shared test setup: an isolated socket, runtime dir, log and modules dir
-- per run, the real server and echo module from target/debug, and helpers
-- to wait for asynchronous results without sleeping.

local M = {}

---@param path string
local function mkdir(path)
  vim.fn.mkdir(path, "p", "0o700")
  vim.uv.fs_chmod(path, tonumber("700", 8))
end

--- Points every path the plugin and the server use into a fresh temp dir
--- and loads the plugin. Runs once, from spec/runner.lua.
---@param root string the repository root
function M.isolate(root)
  M.root = root
  M.tmp = vim.fn.tempname() .. "-np"
  mkdir(M.tmp)
  M.runtime = M.tmp .. "/run"
  mkdir(M.runtime)
  mkdir(M.tmp .. "/sock")
  M.socket = M.tmp .. "/sock/np.sock"
  M.modules = M.tmp .. "/modules"
  mkdir(M.modules)
  M.server = root .. "/target/debug/norgopolis-server"
  M.echo = root .. "/target/debug/echo"
  vim.uv.fs_symlink(M.echo, M.modules .. "/echo")
  -- A module folder with a manifest (the echo binary under another name),
  -- for completion of declared functions and for health checks.
  mkdir(M.modules .. "/notes")
  vim.uv.fs_symlink(M.echo, M.modules .. "/notes/notes-bin")
  vim.fn.writefile({
    'name = "notes"',
    'version = "0.3.0"',
    'description = "echo behind a manifest"',
    'exec = "notes-bin"',
    'functions = ["echo", "count", { name = "sleep", doc = "sleeps" }]',
  }, M.modules .. "/notes/module.toml")
  M.log = M.tmp .. "/server.log"

  vim.env.XDG_RUNTIME_DIR = M.runtime
  vim.env.XDG_STATE_HOME = M.tmp .. "/state"
  vim.env.XDG_DATA_HOME = M.tmp .. "/data"
  vim.env.XDG_CONFIG_HOME = M.tmp .. "/config"
  vim.env.NORGOPOLIS_SOCKET = M.socket
  vim.env.NORGOPOLIS_LOG = M.log
  vim.env.NORGOPOLIS_MODULES_DIR = M.modules
  vim.env.NORGOPOLIS_SERVER = M.server
  vim.env.NORGOPOLIS_CONFIG = M.tmp .. "/config.toml"

  vim.opt.rtp:prepend(root)
  vim.cmd.runtime("plugin/norgopolis.lua")
  -- Loaded before busted starts so its per-file insulation keeps them:
  -- one native library, one runtime, one session for the whole run.
  require("norgopolis")
  require("norgopolis.core").native()
end

--- Stops the server this run started and removes the temp dir.
function M.teardown()
  local ok, native = pcall(require, "norgopolis.native")
  if ok and type(native) == "table" then
    local id = native.shutdown("spec run finished")
    if id then
      vim.wait(3000, function()
        return native.in_flight() == 0
      end)
    end
    native.close()
  end
  if M.tmp then
    vim.fn.delete(M.tmp, "rf")
  end
end

--- Waits for `cond` (processing events), failing the test on timeout.
---@param ms integer
---@param cond fun(): any
---@param what string
function M.wait(ms, cond, what)
  if not vim.wait(ms, cond, 5) then
    error("timed out after " .. ms .. " ms waiting for " .. what, 2)
  end
end

--- Runs an async API function `f(..., cb)` and waits for `cb(err, result)`.
---@return any err
---@return any result
function M.await(f, ...)
  local done, e, r = false, nil, nil
  -- Counted with select: trailing nil arguments (a nil payload) count too.
  local n = select("#", ...)
  local args = { ... }
  args[n + 1] = function(err, result)
    done, e, r = true, err, result
  end
  f(unpack(args, 1, n + 1))
  M.wait(15000, function()
    return done
  end, "a callback")
  return e, r
end

--- Captures vim.notify messages while `f` runs and until `until_fn` holds.
---@param f fun()
---@param until_fn fun(msgs: table[]): boolean
---@return table[] msgs { msg, level }
function M.capture_notify(f, until_fn)
  local msgs = {}
  local real = vim.notify
  vim.notify = function(msg, level)
    table.insert(msgs, { msg = msg, level = level or vim.log.levels.INFO })
  end
  local ok, err = pcall(function()
    f()
    M.wait(15000, function()
      return until_fn(msgs)
    end, "a notification")
  end)
  vim.notify = real
  if not ok then
    error(err .. "\nmessages: " .. vim.inspect(msgs), 0)
  end
  return msgs
end

--- Runs `:checkhealth norgopolis` and returns its report as one string.
---@return string
function M.checkhealth()
  vim.cmd("checkhealth norgopolis")
  local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
  vim.cmd("bwipeout!")
  return table.concat(lines, "\n")
end

--- Whether a process exists.
---@param pid integer
---@return boolean
function M.alive(pid)
  return vim.uv.kill(pid, 0) == 0
end

--- Puts module folder `dir` in the place of the run's `notes` (echo behind
--- a manifest, parked meanwhile) and writes `config_lines` to the run's
--- config.toml. Returns the function that puts both back.
---@param dir string
---@param config_lines string[]
---@return fun() restore
function M.swap_notes(dir, config_lines)
  local config = vim.env.NORGOPOLIS_CONFIG
  local link, parked = M.modules .. "/notes", M.modules .. "/notes.parked"
  local saved = vim.uv.fs_stat(config) and vim.fn.readfile(config) or nil
  vim.fn.writefile(config_lines, config)
  assert(vim.uv.fs_rename(link, parked))
  assert(vim.uv.fs_symlink(dir, link))
  return function()
    vim.uv.fs_unlink(link)
    vim.uv.fs_rename(parked, link)
    if saved then
      vim.fn.writefile(saved, config)
    else
      vim.uv.fs_unlink(config)
    end
  end
end

--- Runs a Lua script in a second headless Neovim with the same environment
--- (socket, modules, server). Returns the vim.system object.
---@param script string Lua source
---@param opts? table vim.system options
---@param on_exit? fun(result: vim.SystemCompleted) called when it exits
function M.spawn_nvim(script, opts, on_exit)
  local file = vim.fn.tempname() .. ".lua"
  vim.fn.writefile(vim.split(script, "\n"), file)
  local cmd = {
    vim.v.progpath,
    "--headless",
    "-u",
    "NONE",
    "-i",
    "NONE",
    "--cmd",
    "set rtp^=" .. vim.fn.fnameescape(M.root),
    "-l",
    file,
  }
  return vim.system(cmd, vim.tbl_extend("force", { text = true }, opts or {}), on_exit)
end

--- Runs a Lua script in a headless Neovim of its own (no 'runtimepath'
--- change: the script sets up what it needs) and waits for it.
---@param script string Lua source
---@param env table<string, string> added to the environment
---@param ms integer failure bound
---@return vim.SystemCompleted
function M.run_lua(script, env, ms)
  local file = vim.fn.tempname() .. ".lua"
  vim.fn.writefile(vim.split(script, "\n"), file)
  return vim
    .system(
      { vim.v.progpath, "--headless", "-u", "NONE", "-i", "NONE", "-l", file },
      { text = true, env = env }
    )
    :wait(ms)
end

--- PATH without the directories that hold cargo or rustc (installs that
--- must work without a Rust toolchain).
---@return string
function M.path_without_cargo()
  local keep = {}
  for _, dir in ipairs(vim.split(vim.env.PATH or "", ":", { plain = true })) do
    if
      dir ~= ""
      and vim.fn.executable(dir .. "/cargo") == 0
      and vim.fn.executable(dir .. "/rustc") == 0
    then
      table.insert(keep, dir)
    end
  end
  return table.concat(keep, ":")
end

return M
