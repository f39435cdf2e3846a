---@mod norgopolis.config Configuration of the norgopolis plugin
---
--- Options come from `vim.g.norgopolis` (a table, read at first use) and from
--- `require("norgopolis").setup(opts)`; setup's options win. Both are
--- validated: an unknown key or a wrong type is an error naming the option.

local M = {}

---@class norgopolis.Config
---@field socket? string Socket path. Default: $NORGOPOLIS_SOCKET, else the per-user runtime dir.
---@field server? string Server binary. Default: $NORGOPOLIS_SERVER, the binary built next to the plugin (target/release, then target/debug), then PATH.
---@field modules_dirs? string[] Module directories for a server this Neovim starts (searched in order). Default: $NORGOPOLIS_MODULES_DIR, else $XDG_DATA_HOME/norgopolis/modules.
---@field linger? integer|string How long a server this Neovim starts lingers after its last client leaves: milliseconds, or a duration such as "3s" or "500ms". Default: the server's (3 s).
---@field spawn_timeout integer Milliseconds to wait for a spawned server to become ready. Default: 10000.
---@field call_timeout integer Default timeout of `call_sync` in milliseconds. Default: 10000.
---@field log_level integer|string Least severe plugin message shown: a `vim.log.levels` value or its name ("debug", "info", "warn", "error", "off"). Default: "info".
---@field modules? table<string,table> Module configurations for a server this Neovim starts, by module name (e.g. `{ notes = { workspaces = { notes = "~/notes" } } }`): merged over the `[modules.NAME]` tables of the server's config.toml, these winning key by key. A running server keeps its own. Default: none.

---@type norgopolis.Config
M.defaults = {
  socket = nil,
  server = nil,
  modules_dirs = nil,
  linger = nil,
  spawn_timeout = 10000,
  call_timeout = 10000,
  log_level = "info",
  modules = nil,
}

local level_names = {
  trace = vim.log.levels.TRACE,
  debug = vim.log.levels.DEBUG,
  info = vim.log.levels.INFO,
  warn = vim.log.levels.WARN,
  error = vim.log.levels.ERROR,
  off = vim.log.levels.OFF,
}

---@param what string
---@param v any
---@return string? err
local function nonempty_string(what, v)
  if type(v) ~= "string" or v == "" then
    return ("%s must be a non-empty string, got %s"):format(what, vim.inspect(v))
  end
end

---@param name string
---@param v any
---@return string? err
local function positive_ms(name, v)
  if type(v) ~= "number" or v <= 0 or v ~= math.floor(v) then
    return ("%s must be a positive whole number of milliseconds, got %s"):format(
      name,
      vim.inspect(v)
    )
  end
end

--- Why `v`, found at `where` inside a module's configuration, cannot be
--- sent to the server as JSON; nil when it can.
---@param v any
---@param where string
---@param depth integer
---@return string? err
local function json_problem(v, where, depth)
  local t = type(v)
  if t == "string" or t == "boolean" or v == vim.NIL then
    return nil
  elseif t == "number" then
    if v ~= v or v == math.huge or v == -math.huge then
      return ("%s is %s, which JSON cannot hold"):format(where, tostring(v))
    end
    return nil
  elseif t ~= "table" then
    return ("%s is a %s; use strings, numbers, booleans, lists and tables"):format(where, t)
  elseif depth > 32 then
    return ("%s is nested too deep (a cycle?)"):format(where)
  end
  if vim.islist(v) then
    for i, x in ipairs(v) do
      local err = json_problem(x, ("%s[%d]"):format(where, i), depth + 1)
      if err then
        return err
      end
    end
    return nil
  end
  for k, x in pairs(v) do
    if type(k) ~= "string" then
      return ("%s has the key %s; keys must be strings"):format(where, vim.inspect(k))
    end
    local err = json_problem(x, where .. "." .. k, depth + 1)
    if err then
      return err
    end
  end
end

--- One checker per option, and so the list of option names (including
--- those whose default is nil); each returns an error message or nil.
---@type table<string, fun(v: any): string?>
local checks = {
  socket = function(v)
    return nonempty_string("socket", v)
  end,
  server = function(v)
    return nonempty_string("server", v)
  end,
  modules_dirs = function(v)
    if type(v) == "string" then
      return "modules_dirs must be a list of directories (e.g. { "
        .. vim.inspect(v)
        .. " }), got a string"
    end
    if type(v) ~= "table" or not vim.islist(v) then
      return ("modules_dirs must be a list of directories, got %s"):format(vim.inspect(v))
    end
    for i, dir in ipairs(v) do
      local err = nonempty_string(("modules_dirs[%d]"):format(i), dir)
      if err then
        return err
      end
    end
  end,
  linger = function(v)
    if type(v) == "number" then
      if v < 0 or v ~= math.floor(v) then
        return ("linger must be a whole number of milliseconds >= 0, got %s"):format(v)
      end
      return nil
    end
    if type(v) == "string" and (v:match("^%d+$") or v:match("^%d+m?s$")) then
      return nil
    end
    return ('linger must be milliseconds or a duration such as "3s" or "500ms", got %s'):format(
      vim.inspect(v)
    )
  end,
  spawn_timeout = function(v)
    return positive_ms("spawn_timeout", v)
  end,
  call_timeout = function(v)
    return positive_ms("call_timeout", v)
  end,
  modules = function(v)
    if type(v) ~= "table" or (next(v) ~= nil and vim.islist(v)) then
      return ("modules must be a table of module configurations by name (e.g. { notes = { ... } }), got %s"):format(
        vim.inspect(v)
      )
    end
    for name, table_ in pairs(v) do
      if type(name) ~= "string" or not name:match("^[%w_-]+$") or #name > 64 then
        return ("modules: %s is not a module name (letters, digits, '_' and '-', at most 64)"):format(
          vim.inspect(name)
        )
      end
      local where = "modules." .. name
      if type(table_) ~= "table" or (next(table_) ~= nil and vim.islist(table_)) then
        return ("%s must be a table of settings, got %s"):format(where, vim.inspect(table_))
      end
      local err = json_problem(table_, where, 0)
      if err then
        return err
      end
    end
  end,
  log_level = function(v)
    if type(v) == "number" and v == math.floor(v) and v >= 0 and v <= vim.log.levels.OFF then
      return nil
    end
    if type(v) == "string" and level_names[v:lower()] then
      return nil
    end
    return ('log_level must be a vim.log.levels value or one of "trace", "debug", "info", "warn", "error", "off"; got %s'):format(
      vim.inspect(v)
    )
  end,
}

--- The closest known option name, for "did you mean" hints.
---@param key string
---@return string?
local function suggest(key)
  local best, best_score
  for name in pairs(checks) do
    -- Shared prefix length is a cheap, good-enough similarity for typos.
    local n = 0
    while n < #key and n < #name and key:sub(n + 1, n + 1) == name:sub(n + 1, n + 1) do
      n = n + 1
    end
    if n >= 2 and (not best_score or n > best_score) then
      best, best_score = name, n
    end
  end
  return best
end

--- Checks a table of options.
---@param opts any
---@param source string where the options came from, for messages
---@return boolean ok
---@return string? err
function M.validate(opts, source)
  if opts == nil then
    return true
  end
  if type(opts) ~= "table" then
    return false, ("%s must be a table, got %s"):format(source, type(opts))
  end
  local keys = vim.tbl_keys(opts)
  table.sort(keys, function(a, b)
    return tostring(a) < tostring(b)
  end)
  for _, key in ipairs(keys) do
    if type(key) ~= "string" or not checks[key] then
      local hint = type(key) == "string" and suggest(key)
      return false,
        ("%s: unknown option %s%s"):format(
          source,
          vim.inspect(key),
          hint and (" (did you mean %q?)"):format(hint) or ""
        )
    end
    local err = checks[key](opts[key])
    if err then
      return false, ("%s: %s"):format(source, err)
    end
  end
  return true
end

---@type table? options given to setup()
local from_setup = nil

--- Records setup()'s options after validating them; raises on error.
---@param opts? table
function M.set(opts)
  local ok, err = M.validate(opts, "norgopolis.setup()")
  if not ok then
    error(err, 0)
  end
  from_setup = opts and vim.deepcopy(opts) or {}
end

--- The effective configuration: defaults, then `vim.g.norgopolis`, then
--- setup()'s options. Raises if `vim.g.norgopolis` is invalid.
---@return norgopolis.Config
function M.get()
  local global = vim.g.norgopolis
  local ok, err = M.validate(global, "vim.g.norgopolis")
  if not ok then
    error(err, 0)
  end
  return vim.tbl_extend("force", vim.deepcopy(M.defaults), global or {}, from_setup or {})
end

--- The configured log level as a number.
---@param cfg norgopolis.Config
---@return integer
function M.level(cfg)
  local l = cfg.log_level
  if type(l) == "string" then
    return level_names[l:lower()]
  end
  return l
end

--- `linger` as the server's `--linger` argument.
---@param linger integer|string
---@return string
function M.linger_arg(linger)
  if type(linger) == "number" then
    return ("%dms"):format(linger)
  end
  return linger
end

--- `modules` as the server's `--module-config NAME=JSON` arguments, in name
--- order (an empty table is sent as the empty object it means).
---@param modules? table<string, table>
---@return string[]
function M.module_config_args(modules)
  local names = vim.tbl_keys(modules or {})
  table.sort(names)
  local args = {}
  for _, name in ipairs(names) do
    local t = modules[name]
    local json = next(t) == nil and "{}" or vim.json.encode(t)
    vim.list_extend(args, { "--module-config", name .. "=" .. json })
  end
  return args
end

return M
