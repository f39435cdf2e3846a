---@mod norgopolis Norgopolis for Neovim
---
--- Calls native Neorg modules through the per-user norgopolis server. The
--- first call attaches this Neovim to the server (starting it if needed);
--- the attachment keeps the server alive and ends when Neovim exits.
--- Everything is asynchronous and callback based; callbacks run on the main
--- loop. Events published through the server reach `on(topic, fn)`
--- handlers and `User NorgopolisEvent` autocmds (see "Events" below);
--- attaching and detaching fire `User NorgopolisSession` (`data.type` is
--- "attached" or "detached"). Errors are tables `{ code = "NotFound",
--- message = "..." }` where `code` is a gRPC status name
--- ("InvalidArgument", "NotFound", "Unavailable", "Cancelled",
--- "DeadlineExceeded", "Internal", ...).
---
--- ```lua
--- local norgopolis = require("norgopolis")
--- norgopolis.invoke("echo", "count", 3, {
---   on_value = function(v) print("item", v) end,
---   on_done = function(err) print("done", err and err.message) end,
--- })
--- norgopolis.call("echo", "echo", { a = 1 }, function(err, values) end)
--- local values, err = norgopolis.call_sync("echo", "echo", "hi", { timeout = 2000 })
--- ```
---
--- Values: Lua <-> MessagePack
---
--- | Lua (sent)                                | MessagePack          | Lua (received)                    |
--- |-------------------------------------------|----------------------|-----------------------------------|
--- | nil, vim.NIL                              | nil                  | nil at top level; vim.NIL inside lists/maps |
--- | true / false                              | bool                 | true / false                      |
--- | number without fraction, fits 64 bits     | int (exact value)    | number if |n| <= 2^53, else int64_t/uint64_t cdata (exact) |
--- | int64_t / uint64_t cdata (`1LL`, `1ULL`)  | int                  | as above                          |
--- | other numbers (1.5, -0.0, inf, nan, 1e300)| float64              | number                            |
--- | string, valid UTF-8                       | str                  | string                            |
--- | string, not UTF-8 (any bytes, NUL-safe)   | bin                  | string (bytes unchanged)          |
--- | table with keys exactly 1..n              | array                | list                              |
--- | table with only string keys               | map (keys sorted)    | table                             |
--- | `{}` (empty, no metatable)                | empty array          | `{}`                              |
--- | `vim.empty_dict()`                        | empty map            | `vim.empty_dict()`                |
--- | table with holes (1, 3) or keys 0, -1, 2.5| error "sparse array" | —                                 |
--- | table mixing 1..n and string keys         | error "mixes"        | —                                 |
--- | boolean/table/function keys               | error                | —                                 |
--- | function, userdata, thread, other cdata   | error naming where   | —                                 |
--- | tables nested > 100 deep (cycles)         | error                | —                                 |
--- | —                                         | map with int keys    | table with number keys            |
--- | —                                         | ext types            | the call fails (Internal)         |
---
--- Errors name the place in the value, e.g. `args.items[3] is a sparse
--- array`. Items a call streams are delivered one by one; in the list that
--- `call`/`call_sync` collect, a nil item is stored as `vim.NIL` so the list
--- has no holes.
---
--- Events
---
--- Any client or module publishes `{ module, topic, payload }` through the
--- server; every attached front end receives it, in the same order
--- everywhere. In Neovim each event is a table
--- `{ module, topic, payload, seq }` (payload decoded by the value table;
--- `payload_error` explains a payload that could not be decoded), handed
--- first to the `on()` handlers whose topic equals the event's topic
--- exactly (no patterns, no prefixes; optionally also its module), in the
--- order they subscribed, then to the `User NorgopolisEvent` autocmd as
--- `ev.data`. Autocmd data passes through Neovim's API conversion, which
--- cannot carry 64-bit integer cdata (such a payload is left out, with
--- `payload_error` saying so) and turns integer-keyed maps into lists;
--- `on()` handlers get the payload exactly.
---
--- The server publishes its own lifecycle as module "norgopolis":
---
--- | topic             | payload |
--- |-------------------|---------|
--- | `module.loaded`   | `{ name, pid, path, cause, restarts }` (cause: "call", "load", "autostart", "dependency", "restart", "provide") |
--- | `module.exited`   | `{ name, pid, status, requested, cause }` (cause: "idle", "stop" or "exit") |
--- | `module.crashed`  | `{ name, pid, status, reason, restarts, restart_in_ms }` (status like "exit status 3"; restart_in_ms nil unless it will be restarted) |
--- | `module.failed`   | `{ name, error }` |
--- | `server.shutdown` | `{ reason }`, just before the server says goodbye |
--- | `server.retiring` | `{ successor, pid }`, a newer norgopolis takes over: the next call goes to it |
---
--- ```lua
--- local off = norgopolis.on("module.crashed", function(ev)
---   vim.notify(ev.payload.name .. " crashed: " .. ev.payload.status)
--- end)
--- vim.api.nvim_create_autocmd("User", {
---   pattern = "NorgopolisEvent",
---   callback = function(ev) print(ev.data.module, ev.data.topic) end,
--- })
--- off() -- unsubscribes
--- ```

local config = require("norgopolis.config")
local core = require("norgopolis.core")

local M = {}

--- The version of norgopolis (the plugin; its native library, server and
--- CLI must report the same).
---@return string
function M.version()
  return core.version
end

---@class norgopolis.Error
---@field code string gRPC status name, e.g. "NotFound"
---@field message string what went wrong

---@class norgopolis.InvokeOpts
---@field on_value? fun(value: any) called for each item as it arrives
---@field on_done? fun(err: norgopolis.Error?) called once at the end

---@class norgopolis.Call
---@field id? integer request id (nil if the call could not start)
local Call = {}
Call.__index = Call

--- Cancels the call: no more items are delivered, the module's call is
--- cancelled, and `on_done` runs with a "Cancelled" error (unless the call
--- had already finished).
function Call:cancel()
  if self.id then
    core.cancel(self.id)
  end
end

--- Whether the call is still running (its `on_done` has not run yet).
---@return boolean
function Call:is_running()
  return self.id ~= nil and core.is_pending(self.id)
end

--- Configures the plugin (optional; `vim.g.norgopolis` works too). Raises
--- a clear error for unknown options or wrong types. Takes effect at the
--- next attach.
---@param opts? norgopolis.Config
function M.setup(opts)
  config.set(opts)
  core.configure()
end

---@param name string
---@param v any
---@param level integer
local function check_name(name, v, level)
  if type(v) ~= "string" or v == "" then
    error(
      ("norgopolis: %s must be a non-empty string, got %s"):format(name, vim.inspect(v)),
      level + 1
    )
  end
end

---@param fname string
---@param cb any
---@param level? integer the caller's level as seen from check_cb's caller (default 2)
local function check_cb(fname, cb, level)
  if cb ~= nil and not vim.is_callable(cb) then
    error(
      ("norgopolis.%s: callback must be a function, got %s"):format(fname, type(cb)),
      (level or 2) + 1
    )
  end
end

--- `invoke` for a caller `level` frames up the stack, where errors about
--- the arguments point.
---@param fname string the public function's name, for messages
---@param level integer
local function start_call(fname, level, module, fn, args, opts)
  check_name("module", module, level + 1)
  check_name("function name", fn, level + 1)
  opts = opts or {}
  if type(opts) ~= "table" then
    error(
      ("norgopolis.%s: opts must be a table { on_value = fn, on_done = fn }, got %s"):format(
        fname,
        type(opts)
      ),
      level + 1
    )
  end
  check_cb(fname, opts.on_value, level + 1)
  check_cb(fname, opts.on_done, level + 1)
  local native = core.native(level + 1)
  local id, err = native.invoke(module, fn, { args })
  if not id and err and err.code == "InvalidArgument" then
    -- Unsendable arguments are the caller's bug: say so where it happened.
    error(("norgopolis.%s: %s"):format(fname, err.message), level + 1)
  end
  core.track(id, err, {
    on_value = opts.on_value,
    on_done = opts.on_done and function(e)
      opts.on_done(e)
    end,
  })
  return setmetatable({ id = id }, Call)
end

--- Calls and collects every item, for a caller `level` frames up.
---@param fname string
---@param level integer
local function collect(fname, level, module, fn, args, cb)
  check_cb(fname, cb, level + 1)
  local values, n = {}, 0
  local handle = start_call(fname, level + 1, module, fn, args, {
    on_value = function(v)
      n = n + 1
      values[n] = v == nil and vim.NIL or v
    end,
    on_done = function(err)
      if cb then
        cb(err, values)
      end
    end,
  })
  return handle
end

--- Calls `fn` of `module` with `args`, streaming results.
---@param module string module name
---@param fn string function name
---@param args any arguments (see the value table); nil for none
---@param opts? norgopolis.InvokeOpts
---@return norgopolis.Call
function M.invoke(module, fn, args, opts)
  -- Not a tail call: error levels count this frame.
  local handle = start_call("invoke", 2, module, fn, args, opts)
  return handle
end

--- Calls and collects every item: `cb(err, values)`; on error `values`
--- holds the items received before it.
---@param module string
---@param fn string
---@param args any
---@param cb fun(err: norgopolis.Error?, values: any[])
---@return norgopolis.Call
function M.call(module, fn, args, cb)
  -- Not a tail call: error levels count this frame.
  local handle = collect("call", 2, module, fn, args, cb)
  return handle
end

---@class norgopolis.CallSyncOpts
---@field timeout? integer milliseconds (default: the `call_timeout` option)

--- Blocking helper for scripts and tests: waits (processing events, see
--- `vim.wait`) for the call to finish. Returns the items, or nil and an
--- error; on timeout the call is cancelled and the error is
--- "DeadlineExceeded". Not usable in fast callbacks.
---@param module string
---@param fn string
---@param args any
---@param opts? norgopolis.CallSyncOpts
---@return any[]? values
---@return norgopolis.Error? err
function M.call_sync(module, fn, args, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(
      ("norgopolis.call_sync: opts must be a table { timeout = milliseconds }, got %s"):format(
        vim.inspect(opts)
      ),
      2
    )
  end
  opts = opts or {}
  local timeout = opts.timeout
  if
    timeout ~= nil
    and (type(timeout) ~= "number" or timeout <= 0 or timeout ~= math.floor(timeout))
  then
    error(
      ("norgopolis.call_sync: opts.timeout must be a positive whole number of milliseconds, got %s"):format(
        vim.inspect(timeout)
      ),
      2
    )
  end
  if vim.in_fast_event() then
    error("norgopolis.call_sync cannot wait in a fast (luv) callback: use norgopolis.call", 2)
  end
  timeout = timeout or config.get().call_timeout
  local finished, result, failure = false, nil, nil
  local handle = collect("call_sync", 2, module, fn, args, function(err, values)
    finished, result, failure = true, values, err
  end)
  if not vim.wait(timeout, function()
    return finished
  end, 5) then
    handle:cancel()
    return nil,
      {
        code = "DeadlineExceeded",
        message = ("%s.%s did not finish within %d ms"):format(module, fn, timeout),
      }
  end
  if failure then
    return nil, failure
  end
  return result
end

--- Starts a control request and routes its result to `cb(err, result)`.
---@param start fun(native: table): integer?, table?
---@param cb? fun(err: norgopolis.Error?, result: any)
---@param fname string
local function control(start, cb, fname)
  -- Errors point at the line that called the public function (M.<fname>).
  check_cb(fname, cb, 3)
  local id, err = start(core.native(3))
  core.track(id, err, {
    on_done = function(e, result)
      if cb and e then
        cb(e, nil)
      elseif cb then
        cb(nil, result)
      end
    end,
  })
end

--- Attaches now (normally the first call does): `cb(err, session)` with
--- `{ session_id, server_pid, server_version, socket, transport }`
--- (`transport`: how calls travel, `"lean"` or `"grpc"`).
---@param cb? fun(err: norgopolis.Error?, session: table?)
function M.attach(cb)
  control(function(n)
    return n.connect()
  end, cb, "attach")
end

--- Ends this Neovim's session (its lease on the server) now; the next
--- call attaches again. `cb(err, was_attached)`.
---@param cb? fun(err: norgopolis.Error?, was_attached: boolean?)
function M.detach(cb)
  control(function(n)
    return n.detach()
  end, cb, "detach")
end

--- The server's status: `cb(err, status)` with `{ pid, version,
--- uptime_ms, socket, sessions, calls_in_flight, modules = { { name, pid,
--- state, uptime_ms, calls_served, calls_in_flight, calls_queued,
--- restarts, last_exit, failure, path } }, modules_dirs, log_path,
--- protocol_version, recent_failures = { { module, pid, reason,
--- at_unix_ms } } }`.
--- With `opts.start == false` it only asks a running server and never
--- starts one: with none running, `err.code` is "Unavailable" or "NotFound".
---@param cb fun(err: norgopolis.Error?, status: table?)
---@param opts? norgopolis.StatusOpts
function M.status(cb, opts)
  if opts ~= nil and type(opts) ~= "table" then
    error(
      ("norgopolis.status: opts must be a table { start = boolean }, got %s"):format(type(opts)),
      2
    )
  end
  local start = not (opts and opts.start == false)
  control(function(n)
    return n.status(start)
  end, cb, "status")
end

---@class norgopolis.StatusOpts
---@field start? boolean start a server when none runs (default true)

--- Modules on disk and whether each is loaded: `cb(err, reply)` with
--- `{ modules = { { name, path, loaded, version, description, functions,
--- function_docs, function_args, function_results, dependencies, autostart, error } },
--- dirs }` (`function_docs[i]` documents `functions[i]`, and `function_args[i]`,
--- `function_results[i]` are its declared signature, `""` when the manifest gives
--- none).
---@param cb fun(err: norgopolis.Error?, reply: table?)
function M.modules(cb)
  check_cb("modules", cb)
  control(function(n)
    return n.modules()
  end, function(err, reply)
    if reply then
      require("norgopolis.complete").remember(reply)
    end
    if cb then
      cb(err, reply)
    end
  end, "modules")
end

--- Loads (starts) a module: `cb(err, { module = <status>, already_loaded })`.
---@param name string
---@param cb? fun(err: norgopolis.Error?, reply: table?)
function M.load(name, cb)
  check_name("module", name, 2)
  control(function(n)
    return n.load(name)
  end, cb, "load")
end

--- Stops a module: `cb(err, was_loaded)`.
---@param name string
---@param cb? fun(err: norgopolis.Error?, was_loaded: boolean?)
function M.unload(name, cb)
  check_name("module", name, 2)
  control(function(n)
    return n.unload(name)
  end, cb, "unload")
end

--- Asks the server to exit (every attached front end is told): `cb(err)`.
---@param cb? fun(err: norgopolis.Error?)
function M.shutdown(cb)
  control(function(n)
    return n.shutdown("requested from Neovim " .. vim.fn.getpid())
  end, cb, "shutdown")
end

--- Publishes an event to every attached front end (this one included);
--- each receives it through its `on()` handlers and `User
--- NorgopolisEvent` autocmd as `{ module, topic, payload, seq }`.
--- `cb(err, delivered)` with the number of sessions reached. The server
--- refuses module "norgopolis" (reserved for its own events).
---@param module string the publishing module's name (any plain name)
---@param topic string
---@param payload any encoded like call arguments
---@param cb? fun(err: norgopolis.Error?, delivered: integer?)
function M.publish(module, topic, payload, cb)
  check_name("module", module, 2)
  check_name("topic", topic, 2)
  local native = core.native(2)
  local id, err = native.publish(module, topic, { payload })
  if not id and err and err.code == "InvalidArgument" then
    error("norgopolis.publish: " .. err.message, 2)
  end
  control(function()
    return id, err
  end, cb, "publish")
end

--- Installs a module, an executable or a module folder (with its
--- module.toml), into the user modules dir by running `norgopolis module
--- install` (the CLI beside the server binary, else on PATH), so Neovim and
--- the command line install alike: the module is checked as the server
--- would load it, and a running server can call it at once. The user
--- modules dir is the first of the `modules_dirs` option, else of
--- $NORGOPOLIS_MODULES_DIR, else $XDG_DATA_HOME/norgopolis/modules; a dir
--- inside the plugin's own folder is skipped (an update replaces it), and
--- a module that already is the source (or links to it) is left alone.
--- `cb(err, { message, warnings })`; an existing module of the same name is
--- an "AlreadyExists" error unless `opts.force`.
---@param path string
---@param opts? norgopolis.InstallOpts
---@param cb? fun(err: norgopolis.Error?, installed: norgopolis.Installed?)
function M.install(path, opts, cb)
  check_name("path", path, 2)
  opts = opts or {}
  if type(opts) ~= "table" then
    error("norgopolis.install: opts must be a table { force = boolean, name = string }", 2)
  end
  if opts.name ~= nil then
    check_name("opts.name", opts.name, 2)
  end
  check_cb("install", cb)
  require("norgopolis.install").install(path, opts, function(err, installed)
    if cb then
      cb(err, installed)
    end
  end)
end

---@class norgopolis.OnOpts
---@field module? string only events published by this module (exact match)
---@field attach? boolean attach now if not attached, so events start to flow (default true)

--- Subscribes `fn` to events whose topic is exactly `topic` (no patterns
--- or prefixes). Handlers run on the main loop, in event order, before the
--- `User NorgopolisEvent` autocmd; an error in one is reported and does
--- not stop the others. Events arrive only while this Neovim is attached,
--- so `on` attaches (starting a server if needed) unless `opts.attach` is
--- false; subscriptions outlive sessions (after a server restart they get
--- the new server's events once something attaches again).
---@param topic string
---@param fn fun(event: norgopolis.Event)
---@param opts? norgopolis.OnOpts
---@return fun() unsubscribe removes the handler; calling it again does nothing
function M.on(topic, fn, opts)
  check_name("topic", topic, 2)
  if not vim.is_callable(fn) then
    error(("norgopolis.on: handler must be a function, got %s"):format(type(fn)), 2)
  end
  opts = opts or {}
  if type(opts) ~= "table" then
    error("norgopolis.on: opts must be a table { module = string, attach = boolean }", 2)
  end
  if opts.module ~= nil then
    check_name("opts.module", opts.module, 2)
  end
  local off = require("norgopolis.events").subscribe(topic, fn, opts.module)
  if opts.attach ~= false and not core.native(2).session() then
    M.attach(function(err)
      if err then
        core.notify(
          ("cannot attach to receive %q events: %s: %s"):format(topic, err.code, err.message),
          vim.log.levels.WARN
        )
      end
    end)
  end
  return off
end

---@class norgopolis.ProvideOpts
---@field on_ready? fun() called once the server has registered the name
---@field on_done? fun(err: norgopolis.Error?) called once providing ends (by default a warning, unless `stop()` ended it)

---@class norgopolis.Provider
---@field name string the module name
---@field registered boolean whether the server has registered it
---@field id integer? the native request serving it
local Provider = {}
Provider.__index = Provider

--- Stops providing: the connection closes, the name is free again once
--- the server has seen it close, and calls in flight fail at their callers
--- as `Unavailable`.
function Provider:stop()
  self.stopped = true
  if self.id and core.is_pending(self.id) then
    core.cancel(self.id)
  end
end

--- Whether it is still serving (or still registering).
---@return boolean
function Provider:active()
  return self.id ~= nil and core.is_pending(self.id)
end

--- Makes this Neovim the module `name` that other Neovims, scripts and
--- modules call like any module (an external module: the server never
--- starts or stops it). `fns` maps function names to functions: `fn(args)`
--- returns the call's result; `fn(args, emit)` streams, each `emit(value)`
--- sending one result (it returns false once the caller has gone: stop
--- then). Either fails the call with `error({ code = "NotFound", message =
--- "..." })` (any other error is `Internal`). Functions run on the main
--- loop; a stream gives the editor a turn between items. Attaches first
--- (starting a server if needed). A name already served (by a module or
--- another provider) is refused: `opts.on_done` gets `AlreadyExists`.
---
--- ```lua
--- local p = norgopolis.provide("buffers", {
---   list = function() return vim.tbl_map(vim.api.nvim_buf_get_name, vim.api.nvim_list_bufs()) end,
---   lines = function(args, emit)
---     for _, l in ipairs(vim.api.nvim_buf_get_lines(args.buf, 0, -1, false)) do emit(l) end
---   end,
--- })
--- p:stop()
--- ```
---@param name string module name (`[A-Za-z0-9_-]{1,64}`)
---@param fns table<string, fun(args: any, emit?: fun(value: any): boolean): any>
---@param opts? norgopolis.ProvideOpts
---@return norgopolis.Provider
function M.provide(name, fns, opts)
  check_name("module name", name, 2)
  if type(fns) ~= "table" or next(fns) == nil then
    error(
      ("norgopolis.provide: functions must be a non-empty table { name = function }, got %s"):format(
        vim.inspect(fns)
      ),
      2
    )
  end
  for fname, f in pairs(fns) do
    if type(fname) ~= "string" or fname == "" or not vim.is_callable(f) then
      error(
        ("norgopolis.provide: functions[%s] must be a function under a string name, got %s"):format(
          vim.inspect(fname),
          type(f)
        ),
        2
      )
    end
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("norgopolis.provide: opts must be a table { on_ready = fn, on_done = fn }", 2)
  end
  check_cb("provide", opts and opts.on_ready)
  check_cb("provide", opts and opts.on_done)
  local handle = setmetatable({ name = name, registered = false }, Provider)
  return require("norgopolis.provide").start(handle, fns, opts)
end

--- Encodes a value as MessagePack bytes (see the value table); raises on
--- values that cannot be sent.
---@param value any
---@return string
function M.encode(value)
  local bytes, err = core.native(2).encode({ value })
  if not bytes then
    error("norgopolis.encode: " .. err, 2)
  end
  return bytes
end

--- Decodes MessagePack bytes; raises on invalid input.
---@param bytes string
---@return any
function M.decode(bytes)
  if type(bytes) ~= "string" then
    error(("norgopolis.decode: bytes must be a string, got %s"):format(type(bytes)), 2)
  end
  local value, err = core.native(2).decode(bytes)
  if err then
    error("norgopolis.decode: " .. err, 2)
  end
  return value
end

return M
