---@mod norgopolis.complete Module and function names for completion
---
--- Completion must answer at once, so it combines the modules on disk with
--- what the server last told us (refreshed in the background while this
--- Neovim is attached). Module names never start a server; the functions
--- of a module that declares none are asked of the module itself, through
--- the server (see `asked`).

local M = {}

---@class norgopolis.Signature
---@field args? string the declared shape of the arguments
---@field result? string the declared shape of each result

---@type table<string, { functions: string[], signatures: table<string, norgopolis.Signature> }>
local known = {}

---@type table<string, string[]> functions modules listed when asked
local asked = {}

--- Records a `modules()` reply.
---@param reply table
function M.remember(reply)
  -- A fresh list may follow a reload: ask modules again next time.
  asked = {}
  for _, m in ipairs(reply.modules or {}) do
    local signatures = {}
    for i, f in ipairs(m.functions or {}) do
      local args = (m.function_args or {})[i]
      local result = (m.function_results or {})[i]
      signatures[f] = {
        args = args ~= "" and args or nil,
        result = result ~= "" and result or nil,
      }
    end
    known[m.name] = { functions = m.functions or {}, signatures = signatures }
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

--- The modules on disk, as the server would pick them (see
--- `paths.disk_modules`).
---@return norgopolis.DiskModule[]
local function on_disk()
  local config = require("norgopolis.config")
  local paths = require("norgopolis.paths")
  local ok, cfg = pcall(config.get)
  return paths.disk_modules((paths.search_dirs(ok and cfg or config.defaults)))
end

--- The manifest functions of `module` on disk, as `{ name, args?, result? }`.
---@param module string
---@return { name: string, args?: string, result?: string }[]
local function disk_functions(module)
  local out = {}
  for _, m in ipairs(on_disk()) do
    if m.name == module then
      for _, f in ipairs(m.functions or {}) do
        table.insert(out, {
          name = f.name,
          args = f.args ~= "" and f.args or nil,
          result = f.result ~= "" and f.result or nil,
        })
      end
      break
    end
  end
  return out
end

--- Module names from disk and the server, sorted.
---@return string[]
function M.module_names()
  local names = {}
  for _, m in ipairs(on_disk()) do
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

--- How long completion waits for a module to list its functions.
M.ask_timeout_ms = 2000

--- A function name no module has: calling it makes a module on our SDK (or
--- one following its convention) answer NotFound with "(has: a, b, c)".
local probe_function = "norgopolis-list-functions"

--- The functions `module` lists when called with a function it lacks, or
--- nil when it does not say (waits at most `ask_timeout_ms`).
---@param module string
---@return string[]?
local function ask_module(module)
  if asked[module] then
    return asked[module]
  end
  local ok, handle_or_err = pcall(function()
    local done, err
    local norgopolis = require("norgopolis")
    norgopolis.invoke(module, probe_function, nil, {
      on_done = function(e)
        done, err = true, e
      end,
    })
    vim.wait(M.ask_timeout_ms, function()
      return done
    end, 5)
    return err
  end)
  local err = ok and handle_or_err or nil
  local list = err and err.code == "NotFound" and err.message:match("%(has: ([^)]*)%)")
  if not list then
    return nil
  end
  asked[module] = vim.split(list, "%s*,%s*", { trimempty = true })
  return asked[module]
end

--- Function names of a module, sorted: from its manifest and the server's
--- list, else (no function declared anywhere) as the module itself lists
--- them.
---@param module string
---@return string[]
function M.function_names(module)
  local names = {}
  for _, f in ipairs(known[module] and known[module].functions or {}) do
    names[f] = true
  end
  for _, f in ipairs(disk_functions(module)) do
    names[f.name] = true
  end
  if vim.tbl_isempty(names) and not vim.in_fast_event() then
    for _, f in ipairs(ask_module(module) or {}) do
      names[f] = true
    end
  end
  local list = vim.tbl_keys(names)
  table.sort(list)
  return list
end

--- The declared signature of `module`'s function `fn` (from its manifest
--- on disk, else the server's list), or nil when it declares none.
---@param module string
---@param fn string
---@return norgopolis.Signature?
function M.signature(module, fn)
  for _, f in ipairs(disk_functions(module)) do
    if f.name == fn and (f.args or f.result) then
      return { args = f.args, result = f.result }
    end
  end
  local sig = known[module] and known[module].signatures[fn]
  if sig and (sig.args or sig.result) then
    return sig
  end
end

--- A signature as one line: `(args) -> result` (`any` for undeclared args).
---@param sig norgopolis.Signature
---@return string
function M.format_signature(sig)
  local text = ("(%s)"):format(sig.args or "any")
  if sig.result then
    text = text .. " -> " .. sig.result
  end
  return text
end

--- Completion of a call's arguments: the declared shape of `fn`'s
--- arguments, as a reminder of what to type (command-line completion
--- lists only text, so the signature is the listed text), or nothing.
---@param module string
---@param fn string
---@param lead string
---@return string[]
function M.args_hint(module, fn, lead)
  local sig = M.signature(module, fn)
  if not sig or not sig.args or lead ~= "" then
    return {}
  end
  return { sig.args }
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
