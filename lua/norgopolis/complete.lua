---@mod norgopolis.complete Module and function names for completion
---
--- Completion must answer at once, so it combines the modules on disk with
--- what the server last told us (refreshed in the background while this
--- Neovim is attached); it never starts a server.

local M = {}

---@type table<string, { functions: string[] }>
local known = {}

--- Records a `modules()` reply.
---@param reply table
function M.remember(reply)
  for _, m in ipairs(reply.modules or {}) do
    known[m.name] = { functions = m.functions or {} }
  end
end

--- Asks the server for its module list if attached (result used next time).
local function refresh()
  local core = require("norgopolis.core")
  local native = core.try_native()
  if native and native.session() then
    require("norgopolis").modules(function() end)
  end
end

---@param file string
---@return table?
local function read_manifest(file)
  local native = require("norgopolis.core").try_native()
  if native then
    local t = native.read_toml(file)
    return type(t) == "table" and t or nil
  end
end

--- Module names from disk and the server, sorted.
---@return string[]
function M.module_names()
  local config = require("norgopolis.config")
  local paths = require("norgopolis.paths")
  local ok, cfg = pcall(config.get)
  local names = {}
  for _, m in ipairs(paths.disk_modules(paths.modules_dirs(ok and cfg or config.defaults))) do
    names[m.name] = true
  end
  for name in pairs(known) do
    names[name] = true
  end
  pcall(refresh)
  local list = vim.tbl_keys(names)
  table.sort(list)
  return list
end

--- Function names of a module, when known (manifest or server), sorted.
---@param module string
---@return string[]
function M.function_names(module)
  local config = require("norgopolis.config")
  local paths = require("norgopolis.paths")
  local ok, cfg = pcall(config.get)
  local names = {}
  for _, f in ipairs(known[module] and known[module].functions or {}) do
    names[f] = true
  end
  for _, m in ipairs(paths.disk_modules(paths.modules_dirs(ok and cfg or config.defaults))) do
    if m.name == module and m.manifest then
      local manifest = read_manifest(m.manifest)
      for _, f in ipairs(manifest and manifest.functions or {}) do
        local name = type(f) == "table" and f.name or f
        if type(name) == "string" then
          names[name] = true
        end
      end
    end
  end
  local list = vim.tbl_keys(names)
  table.sort(list)
  return list
end

--- Entries of `list` starting with `lead`.
---@param list string[]
---@param lead string
---@return string[]
function M.filter(list, lead)
  return vim.tbl_filter(function(s)
    return vim.startswith(s, lead)
  end, list)
end

return M
