---@mod norgopolis.core Loads the native library and routes its reports
---
--- The native library (`norgopolis.native`) returns request ids and later
--- hands batches of reports to one sink function, from a libuv callback.
--- The sink only schedules: user callbacks then run on the main loop in a
--- normal (non-fast) context, in the order the reports arrived.

local config = require("norgopolis.config")
local paths = require("norgopolis.paths")

local M = {}

--- Version of the Lua side; the native library must report the same.
M.version = require("norgopolis.version")

---@class norgopolis.Pending
---@field on_value? fun(value: any)
---@field on_done? fun(err: norgopolis.Error?, result: any)
---@field cancelled? boolean
---@field err? norgopolis.Error an error seen before `done`

---@type table<integer, norgopolis.Pending>
local pending = {}

---@type table?
local native = nil

--- Whether the native side holds this Neovim's settings. A configure that
--- failed leaves it false, so the next call tries again.
local configured = false

--- Last known session (`{ session_id, server_pid, server_version, socket, transport }`).
---@type table?
M.session = nil

--- Shows a plugin message if it passes the configured level.
---@param msg string
---@param level? integer
function M.notify(msg, level)
  level = level or vim.log.levels.INFO
  local ok, cfg = pcall(config.get)
  local threshold = ok and config.level(cfg) or vim.log.levels.INFO
  if level >= threshold then
    vim.notify(msg, level, { title = "norgopolis" })
  end
end

--- Runs a user function with `...`; its error is reported, not propagated,
--- so one failing callback or handler cannot stop the delivery to others.
---@param what string the function, for the report ("a callback")
---@param f? function nothing is run when nil
function M.protected(what, f, ...)
  if not f then
    return
  end
  local ok, err = xpcall(f, debug.traceback, ...)
  if not ok then
    vim.notify(("norgopolis: error in %s: %s"):format(what, tostring(err)), vim.log.levels.ERROR)
  end
end

--- Runs a request's callback (see `M.protected`).
---@param f? function
local function run(f, ...)
  M.protected("a callback", f, ...)
end

---@param v table
local function on_event(v)
  if v.type == "attached" then
    -- The event is the session's table (the native side builds both from
    -- one list of fields) plus its type.
    local session = {}
    for k, x in pairs(v) do
      if k ~= "type" then
        session[k] = x
      end
    end
    M.session = session
  elseif v.type == "detached" then
    if M.session and M.session.session_id == v.session_id then
      M.session = nil
    end
  end
  if v.type == "event" then
    require("norgopolis.events").dispatch(v)
    return
  end
  pcall(vim.api.nvim_exec_autocmds, "User", {
    pattern = "NorgopolisSession",
    data = v,
    modeline = false,
  })
end

---@param d table one report: { id, kind, value?, err?, result? }
local function deliver(d)
  if d.kind == "event" then
    if d.value then
      on_event(d.value)
    end
    return
  end
  local p = pending[d.id]
  if not p then
    return
  end
  if d.kind == "value" then
    if not p.cancelled and not p.err then
      run(p.on_value, d.value)
    end
  elseif d.kind == "bad_value" then
    p.err = p.err or d.err
    native.cancel(d.id)
  elseif d.kind == "done" then
    pending[d.id] = nil
    run(p.on_done, p.err or d.err, d.result)
  end
end

---@param batch table[]
local function sink(batch)
  vim.schedule(function()
    for _, d in ipairs(batch) do
      deliver(d)
    end
  end)
end

--- Settings for the native side from the effective configuration.
---@param cfg norgopolis.Config
---@return table
local function settings(cfg)
  local args = {}
  if cfg.modules_dirs then
    for _, dir in ipairs(paths.modules_dirs(cfg)) do
      vim.list_extend(args, { "--modules-dir", dir })
    end
  end
  local bundled = paths.bundled_modules_dir()
  if bundled then
    vim.list_extend(args, { "--fallback-modules-dir", bundled })
  end
  if cfg.linger then
    vim.list_extend(args, { "--linger", config.linger_arg(cfg.linger) })
  end
  vim.list_extend(args, config.module_config_args(cfg.modules))
  local server = paths.find_server(cfg.server)
  if server.err and (cfg.server or server.source == "$NORGOPOLIS_SERVER") then
    -- Taken at its word: let the attach fail with this message.
    server.path = server.tried[1]
  end
  return {
    socket = cfg.socket and vim.fs.normalize(cfg.socket) or nil,
    server = server.path,
    server_args = args,
    spawn_timeout_ms = cfg.spawn_timeout,
    client_name = ("nvim %d"):format(vim.fn.getpid()),
  }
end

--- Passes the current configuration to the native side (applies at the
--- next attach). Raises with the reason when the configuration is invalid;
--- the next call then tries again.
function M.configure()
  configured = false
  if native then
    local ok, err = native.configure(settings(config.get()))
    if not ok then
      error("norgopolis: " .. tostring(err), 0)
    end
    configured = true
  end
end

--- Where the native library would be loaded from, or nil: Neovim's own
--- loader searches 'runtimepath' (lua/norgopolis/native.so) before
--- package.cpath (where a rock puts it).
---@return string?
function M.native_path()
  return vim.api.nvim_get_runtime_file("lua/norgopolis/native.so", false)[1]
    or package.searchpath("norgopolis.native", package.cpath)
end

--- Why `require("norgopolis.native")` failed, in one line: a library that
--- is not there gets the build advice once, instead of the loader's list
--- of every path it tried.
---@param loader_err any
---@return string
local function load_failure(loader_err)
  local where = M.native_path()
  if not where then
    return ("the native library is not built (no lua/norgopolis/native.so): %s"):format(
      paths.build_hint()
    )
  end
  local first = vim.split(tostring(loader_err), "\n", { plain = true })[1]
  return ("cannot load the native library %s: %s; to fix it, %s"):format(
    where,
    first,
    paths.build_hint()
  )
end

--- Loads the native library without raising (and without configuring it).
---@return table? native
---@return string? err
function M.load_native()
  if native then
    return native
  end
  local ok, mod = pcall(require, "norgopolis.native")
  if not ok then
    return nil, load_failure(mod)
  end
  if type(mod) ~= "table" or mod.version ~= M.version then
    -- Left in package.loaded: loading it again would start a second
    -- runtime; a rebuilt library needs a Neovim restart anyway.
    return nil,
      ("native library version %s does not match the Lua side's %s: to fix it, %s, then restart Neovim"):format(
        type(mod) == "table" and tostring(mod.version) or "?",
        M.version,
        paths.build_hint()
      )
  end
  mod.set_sink(sink)
  native = mod
  -- Leaving ends this Neovim's lease at once; if Neovim dies instead, the
  -- closed socket tells the server the same.
  vim.api.nvim_create_autocmd("VimLeavePre", {
    group = vim.api.nvim_create_augroup("norgopolis.exit", { clear = true }),
    callback = function()
      mod.close()
    end,
  })
  return native
end

--- The configured native library without raising: nil and the reason when
--- it cannot be loaded or the configuration is invalid.
---@return table? native
---@return string? err
function M.try_native()
  if native and configured then
    return native
  end
  if vim.in_fast_event() then
    -- Loading and configuring read options and create autocmds, which a
    -- fast (luv) callback may not; nothing is left half-done.
    return nil,
      "the first norgopolis call cannot run in a fast (luv) callback: wrap it in vim.schedule()"
  end
  local mod, err = M.load_native()
  if not mod then
    return nil, err
  end
  local ok_cfg, cfg_err = pcall(M.configure)
  if not ok_cfg then
    return nil, tostring(cfg_err):gsub("^norgopolis: ", "")
  end
  return native
end

--- The native library; raises a clear error if it cannot be loaded.
---@param level? integer error level, for errors at the caller's line (default 0: no position)
---@return table
function M.native(level)
  local mod, err = M.try_native()
  if not mod then
    error("norgopolis: " .. err, level and level + 1 or 0)
  end
  return mod
end

--- Tracks a request started on the native side.
---@param id integer?
---@param err table? the immediate error when `id` is nil
---@param handlers norgopolis.Pending
---@return integer? id
function M.track(id, err, handlers)
  if not id then
    -- Still asynchronous, so callers see one calling convention.
    vim.schedule(function()
      run(handlers.on_done, err or { code = "Internal", message = "request not started" })
    end)
    return nil
  end
  pending[id] = handlers
  return id
end

--- Stops delivering items of a request and asks the native side to stop
--- it; its on_done still runs once (with a Cancelled error unless it had
--- already finished).
---@param id integer
function M.cancel(id)
  local p = pending[id]
  if p then
    p.cancelled = true
    native.cancel(id)
  end
end

--- Whether a request is still pending.
---@param id integer
---@return boolean
function M.is_pending(id)
  return pending[id] ~= nil
end

return M
