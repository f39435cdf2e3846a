---@mod norgopolis.provide This Neovim as a module others call
---
--- `require("norgopolis").provide(name, fns)` registers this Neovim with
--- the server as the external module `name`: other Neovims, scripts and
--- modules call its functions like any module's. The native library holds
--- the connection and hands each call here; the function runs on the main
--- loop in a coroutine of its own, and a streaming function yields to the
--- loop between items when it has run for a while, so a long stream never
--- freezes the editor. A call whose caller goes away (cancel, deadline) is
--- not resumed again, and its later items are dropped.

local core = require("norgopolis.core")

local M = {}

--- A streaming function gives the main loop a turn after running this long.
local SLICE_NS = 2e6

--- Sends a reply of `call` to the native side: false once the call is
--- over; nil and why for an item that cannot be sent.
---@param handle norgopolis.Provider
---@param call table
---@return boolean? sent
---@return string? err
local function reply(handle, call, kind, a, b)
  if call.over then
    return false
  end
  local ok, err = core.native().provide_reply(handle.id, call.id, kind, a, b)
  if err then
    return nil, err
  end
  if not ok then
    call.over = true
  end
  return ok == true
end

--- Ends `call` with the error `e` raised by its function.
local function fail(handle, call, e)
  if type(e) == "table" and type(e.code) == "string" then
    reply(handle, call, "error", e.code, tostring(e.message or ""))
  else
    reply(
      handle,
      call,
      "error",
      "Internal",
      ("function '%s' failed: %s"):format(call.fn, tostring(e))
    )
  end
end

--- Runs one call's coroutine until it yields (then again on a later turn
--- of the main loop) or ends.
local function step(handle, call)
  if call.over then
    return
  end
  call.resumed = vim.uv.hrtime()
  local ok, result = coroutine.resume(call.co)
  if call.over then
    return
  end
  if coroutine.status(call.co) == "suspended" then
    -- Through a timer, not vim.schedule: the loop then polls, so input,
    -- timers and I/O get their turn before the call goes on.
    vim.defer_fn(function()
      step(handle, call)
    end, 0)
    return
  end
  handle.calls[call.id] = nil
  if not ok then
    fail(handle, call, result)
  elseif call.streams then
    reply(handle, call, "end")
  else
    local sent, err = reply(handle, call, "item", { result })
    if err then
      fail(
        handle,
        call,
        { code = "Internal", message = ("function '%s' returned %s"):format(call.fn, err) }
      )
    elseif sent then
      reply(handle, call, "end")
    end
  end
end

--- Starts the call `v` (`{ call, fn, args }`) of `handle`.
local function start(handle, fns, v)
  local call = { id = v.call, fn = v.fn }
  local f = fns[v.fn]
  if not f then
    local names = vim.tbl_keys(fns)
    table.sort(names)
    reply(
      handle,
      call,
      "error",
      "NotFound",
      ("module '%s' has no function '%s' (has: %s)"):format(
        handle.name,
        v.fn,
        table.concat(names, ", ")
      )
    )
    return
  end
  local info = debug.getinfo(f, "u")
  call.streams = info ~= nil and info.nparams ~= nil and info.nparams >= 2
  local emit = function(value)
    if call.over then
      return false
    end
    local sent, err = reply(handle, call, "item", { value })
    if err then
      error({ code = "Internal", message = ("function '%s' emitted %s"):format(call.fn, err) }, 0)
    end
    -- A long stream gives the editor a turn now and then.
    if sent and coroutine.running() == call.co and vim.uv.hrtime() - call.resumed > SLICE_NS then
      coroutine.yield()
    end
    return sent and not call.over
  end
  call.co = coroutine.create(function()
    if call.streams then
      return f(v.args, emit)
    end
    return f(v.args)
  end)
  handle.calls[call.id] = call
  step(handle, call)
end

--- See `require("norgopolis").provide`; fills in `handle` (`registered`,
--- `id`; its calls in flight in `calls`) and returns it.
---@param handle norgopolis.Provider
---@param fns table<string, function>
---@param opts? norgopolis.ProvideOpts
---@return norgopolis.Provider
function M.start(handle, fns, opts)
  opts = opts or {}
  local name = handle.name
  handle.calls = {}
  local names = vim.tbl_keys(fns)
  table.sort(names)
  local id, err = core.native(3).provide(name, names)
  handle.id = core.track(id, err, {
    on_value = function(v)
      if v.type == "registered" then
        handle.registered = true
        if opts.on_ready then
          opts.on_ready()
        end
      elseif v.type == "call" then
        start(handle, fns, v)
      elseif v.type == "cancel" then
        local call = handle.calls[v.call]
        if call then
          call.over = true
          handle.calls[v.call] = nil
        end
      end
    end,
    on_done = function(e)
      for _, call in pairs(handle.calls) do
        call.over = true
      end
      handle.calls = {}
      if opts.on_done then
        opts.on_done(e)
      elseif e and not handle.stopped then
        core.notify(
          ("stopped providing module '%s': %s: %s"):format(name, e.code, e.message),
          vim.log.levels.WARN
        )
      end
    end,
  })
  return handle
end

return M
