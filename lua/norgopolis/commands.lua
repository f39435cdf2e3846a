---@mod norgopolis.commands The :Norgopolis command
---
--- `:Norgopolis {subcommand} [args]`; without a subcommand, `status`.
--- Each subcommand is `{ impl = fun(args, opts), complete? = fun(lead, args) }`
--- where `args` are the words after the subcommand.

local complete = require("norgopolis.complete")
local core = require("norgopolis.core")
local ui = require("norgopolis.ui")

local M = {}

---@param what string
---@param err norgopolis.Error
local function report(what, err)
  core.notify(("%s failed: %s: %s"):format(what, err.code, err.message), vim.log.levels.ERROR)
end

--- Parses `:Norgopolis call` arguments: JSON first, then a Lua literal
--- (evaluated with no access to globals except vim.NIL/vim.empty_dict).
---@param text string
---@return boolean ok
---@return any value_or_err
function M.parse_literal(text)
  if text:match("^%s*$") then
    return true, nil
  end
  local ok, v = pcall(vim.json.decode, text)
  if ok then
    return true, v
  end
  local chunk, err = loadstring("return " .. text, "=args")
  if chunk then
    setfenv(chunk, { vim = { NIL = vim.NIL, empty_dict = vim.empty_dict } })
    local ok2, v2 = pcall(chunk)
    if ok2 then
      return true, v2
    end
    err = v2
  end
  return false, ("cannot read %s as JSON or as a Lua value: %s"):format(text, tostring(err))
end

---@param values any[]
---@return string
local function show_values(values)
  if #values == 1 then
    return vim.inspect(values[1])
  end
  return ("%d items: %s"):format(#values, vim.inspect(values))
end

---@return string[]
local function module_complete(lead)
  return complete.filter(complete.module_names(), lead)
end

--- `:Norgopolis restart {module}`: unload, then load, so the module starts
--- again with the configuration as it is now.
---@param name string
function M.restart_module(name)
  local norgopolis = require("norgopolis")
  norgopolis.unload(name, function(err)
    if err then
      return report("restart " .. name, err)
    end
    norgopolis.load(name, function(err2, reply)
      if err2 then
        return report("restart " .. name, err2)
      end
      core.notify(("restarted %s (pid %s)"):format(name, tostring((reply.module or {}).pid)))
    end)
  end)
end

---@class norgopolis.Subcommand
---@field impl fun(args: string[], opts: table)
---@field complete? fun(lead: string, args: string[]): string[]

---@type table<string, norgopolis.Subcommand>
M.commands = {
  status = {
    -- Asks a running server only: looking must not start one (after
    -- `:Norgopolis shutdown` that would undo it); `start` does that.
    impl = function()
      require("norgopolis").status(function(err, st)
        if err and (err.code == "Unavailable" or err.code == "NotFound") then
          return core.notify("no server is running (`:Norgopolis start` starts one)")
        elseif err then
          return report("status", err)
        end
        ui.show(ui.status_lines(st), "norgopolis status")
      end, { start = false })
    end,
  },
  start = {
    impl = function()
      require("norgopolis").attach(function(err, session)
        if err then
          return report("start", err)
        end
        core.notify(
          ("attached to server pid %d (version %s)"):format(
            session.server_pid,
            tostring(session.server_version)
          )
        )
      end)
    end,
  },
  modules = {
    impl = function()
      require("norgopolis").modules(function(err, reply)
        if err then
          return report("modules", err)
        end
        ui.show(ui.modules_lines(reply), "norgopolis modules")
      end)
    end,
  },
  load = {
    impl = function(args)
      local name = args[1]
      if not name then
        return core.notify("usage: :Norgopolis load {module}", vim.log.levels.ERROR)
      end
      require("norgopolis").load(name, function(err, reply)
        if err then
          return report("load " .. name, err)
        end
        local m = reply.module or {}
        core.notify(
          reply.already_loaded and ("%s was already loaded (pid %s)"):format(name, tostring(m.pid))
            or ("loaded %s (pid %s)"):format(name, tostring(m.pid))
        )
      end)
    end,
    complete = function(lead, args)
      return #args <= 1 and module_complete(lead) or {}
    end,
  },
  unload = {
    impl = function(args)
      local name = args[1]
      if not name then
        return core.notify("usage: :Norgopolis unload {module}", vim.log.levels.ERROR)
      end
      require("norgopolis").unload(name, function(err, was_loaded)
        if err then
          return report("unload " .. name, err)
        end
        core.notify(
          was_loaded and ("unloaded %s"):format(name) or ("%s was not loaded"):format(name)
        )
      end)
    end,
    complete = function(lead, args)
      return #args <= 1 and module_complete(lead) or {}
    end,
  },
  restart = {
    impl = function(args)
      if args[1] then
        return M.restart_module(args[1])
      end
      local norgopolis = require("norgopolis")
      local old = core.session and core.session.server_pid
      local function start()
        norgopolis.detach(function()
          norgopolis.attach(function(err, session)
            if err then
              return report("restart", err)
            end
            core.notify(
              ("server restarted: pid %s -> %d"):format(tostring(old or "none"), session.server_pid)
            )
          end)
        end)
      end
      norgopolis.shutdown(function(err)
        if err and err.code ~= "Unavailable" then
          return report("restart (shutdown)", err)
        end
        start()
      end)
    end,
    complete = function(lead, args)
      return #args <= 1 and module_complete(lead) or {}
    end,
  },
  notes = {
    impl = function(args)
      require("norgopolis.notes").command(args)
    end,
    complete = function(lead, args)
      return require("norgopolis.notes").complete(lead, args)
    end,
  },
  call = {
    impl = function(_, opts)
      local rest = opts.args:gsub("^%s*%S+%s*", "", 1)
      local module, fn, literal = rest:match("^(%S+)%s+(%S+)%s*(.-)%s*$")
      if not module then
        return core.notify(
          "usage: :Norgopolis call {module} {function} [args as JSON or Lua]",
          vim.log.levels.ERROR
        )
      end
      local ok, args = M.parse_literal(literal)
      if not ok then
        return core.notify(args, vim.log.levels.ERROR)
      end
      local started, err = pcall(require("norgopolis").call, module, fn, args, function(e, values)
        if e then
          return report(module .. "." .. fn, e)
        end
        core.notify(("%s.%s -> %s"):format(module, fn, show_values(values)))
      end)
      if not started then
        core.notify(tostring(err), vim.log.levels.ERROR)
      end
    end,
    complete = function(lead, args)
      if #args <= 1 then
        return module_complete(lead)
      elseif #args == 2 then
        return complete.filter(complete.function_names(args[1]), lead)
      elseif #args == 3 then
        return complete.args_hint(args[1], args[2], lead)
      end
      return {}
    end,
  },
  install = {
    impl = function(args)
      local path, opts = require("norgopolis.install").parse_args(args)
      if not path then
        return core.notify(
          ("%s; usage: :Norgopolis install [--force] [--name NAME] {path}"):format(opts),
          vim.log.levels.ERROR
        )
      end
      ---@cast opts norgopolis.InstallOpts
      require("norgopolis").install(path, opts, function(err, installed)
        if err then
          return report("install " .. path, err)
        end
        core.notify(installed.message)
        for _, w in ipairs(installed.warnings) do
          core.notify(w, vim.log.levels.WARN)
        end
      end)
    end,
    complete = function(lead)
      if lead:match("^%-") then
        return complete.filter({ "--force", "--name" }, lead)
      end
      return vim.fn.getcompletion(lead, "file")
    end,
  },
  -- Installs or updates the native parts (norgopolis.build); the running
  -- Neovim keeps the library it loaded until it restarts.
  build = {
    impl = function(args)
      require("norgopolis.build").install({
        from = args[1],
        on_progress = function(msg, kind)
          if kind == "step" then
            core.notify("build: " .. msg)
          end
        end,
      }, function(err)
        if err then
          return core.notify("build failed: " .. err, vim.log.levels.ERROR)
        end
        core.notify("build done: restart Neovim to load the new native library")
      end)
    end,
    complete = function(lead)
      return complete.filter({ "auto", "download", "cargo" }, lead)
    end,
  },
  shutdown = {
    impl = function()
      require("norgopolis").shutdown(function(err)
        if err then
          return report("shutdown", err)
        end
        core.notify("server shut down")
      end)
    end,
  },
  log = {
    impl = function()
      local function open(path)
        if not path or path == "" then
          return core.notify("the server log path is unknown", vim.log.levels.ERROR)
        end
        if not vim.uv.fs_stat(path) then
          return core.notify("no server log yet at " .. path, vim.log.levels.WARN)
        end
        vim.cmd("split " .. vim.fn.fnameescape(path))
        vim.bo.readonly = true
        vim.bo.autoread = true
      end
      local native = core.native()
      if native.session() then
        require("norgopolis").status(function(err, st)
          open(not err and st.log_path or native.places().log)
        end)
      else
        open(native.places().log)
      end
    end,
  },
}

--- Runs `:Norgopolis` with the command's `opts` (as nvim_create_user_command passes them).
---@param opts table
function M.run(opts)
  local args = opts.fargs
  local name = args[1] or "status"
  local sub = M.commands[name]
  if not sub then
    local names = vim.tbl_keys(M.commands)
    table.sort(names)
    return core.notify(
      ("unknown subcommand %q; use one of: %s"):format(name, table.concat(names, ", ")),
      vim.log.levels.ERROR
    )
  end
  local ok, err = pcall(sub.impl, vim.list_slice(args, 2), opts)
  if not ok then
    core.notify(("%s: %s"):format(name, tostring(err)), vim.log.levels.ERROR)
  end
end

--- Completes `:Norgopolis` arguments.
---@param lead string
---@param cmdline string
---@param pos integer
---@return string[]
function M.complete(lead, cmdline, pos)
  local line = cmdline:sub(1, pos)
  local after = line:match("^%s*:?%s*%S+%s+(.*)$") or ""
  local words = vim.split(after, "%s+", { trimempty = false })
  if #words <= 1 then
    local names = vim.tbl_keys(M.commands)
    table.sort(names)
    return complete.filter(names, lead)
  end
  local sub = M.commands[words[1]]
  if sub and sub.complete then
    return sub.complete(lead, vim.list_slice(words, 2))
  end
  return {}
end

return M
