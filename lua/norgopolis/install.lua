---@mod norgopolis.install Installing modules through the `norgopolis` CLI
---
--- `norgopolis module install PATH` owns the install logic (validation as
--- the server loads modules, staging, replacing); Neovim runs that same
--- command rather than a copy of it, so both install alike. The CLI is the
--- one beside the server binary the plugin uses, else `norgopolis` on PATH.

local M = {}

M.cli_name = "norgopolis"

---@class norgopolis.CliLookup
---@field path? string the CLI, if found
---@field tried string[] candidates looked at
---@field err? string what is wrong and how to fix it

--- Finds the `norgopolis` CLI: beside the server binary (the `server`
--- option, $NORGOPOLIS_SERVER, the build next to the plugin, or the rock's
--- bin/), then PATH.
---@param cfg norgopolis.Config
---@return norgopolis.CliLookup
function M.find_cli(cfg)
  local paths = require("norgopolis.paths")
  local tried = {}
  local server = paths.find_server(cfg.server)
  local beside = server.path or server.tried[1]
  if beside and beside ~= "PATH" then
    local candidate = vim.fs.joinpath(vim.fs.dirname(beside), M.cli_name)
    table.insert(tried, candidate)
    if vim.fn.executable(candidate) == 1 then
      return { path = candidate, tried = tried }
    end
  end
  local on_path = vim.fn.exepath(M.cli_name)
  table.insert(tried, "PATH")
  if on_path ~= "" then
    return { path = on_path, tried = tried }
  end
  return {
    tried = tried,
    err = ("the `%s` command was not found (looked at %s): %s, or put it on PATH"):format(
      M.cli_name,
      table.concat(tried, ", "),
      paths.build_hint()
    ),
  }
end

---@class norgopolis.InstallOpts
---@field force? boolean replace an installed module of the same name
---@field name? string install under this name

---@class norgopolis.Installed
---@field message string what the CLI reports, e.g. "installed notes 0.3.0 at /path"
---@field warnings string[] e.g. dependencies that are not installed

--- The command line for an install.
---@param cli string
---@param path string absolute
---@param opts norgopolis.InstallOpts
---@param dirs string[] the destination first, then the dirs dependencies may come from
---@return string[]
function M.command(cli, path, opts, dirs)
  local cmd = { cli }
  -- The CLI installs into the first dir and checks dependencies in all.
  for _, dir in ipairs(dirs) do
    vim.list_extend(cmd, { "--modules-dir", dir })
  end
  vim.list_extend(cmd, { "module", "install" })
  if opts.force then
    table.insert(cmd, "--force")
  end
  if opts.name then
    vim.list_extend(cmd, { "--name", opts.name })
  end
  -- No "--" before it: the CLI reads words after "--" as cargo's. The path
  -- is absolute, so it cannot pass for an option.
  table.insert(cmd, path)
  return cmd
end

--- Where an install goes: the first of the user's modules dirs that is not
--- in the plugin's own folder (which an update replaces), followed by every
--- other searched dir (for the dependency check). Nil and the reason when
--- there is no such dir.
---@param cfg norgopolis.Config
---@return string[]? dirs
---@return string? err
function M.destination(cfg)
  local paths = require("norgopolis.paths")
  local user, source = paths.modules_dirs(cfg)
  local dest
  for _, dir in ipairs(user) do
    if not paths.inside_plugin(dir) then
      dest = dir
      break
    end
  end
  if not dest then
    return nil,
      ("every modules dir (from %s) is inside the plugin's folder %s, which an update replaces: add a dir of your own to the `modules_dirs` option"):format(
        source,
        paths.plugin_root()
      )
  end
  local dirs = { dest }
  for _, dir in ipairs((paths.search_dirs(cfg))) do
    if dir ~= dest then
      table.insert(dirs, dir)
    end
  end
  return dirs
end

--- An error when installing `abs` as `name` into `dest` would replace the
--- source itself (the installed entry is, or links to, `abs`).
---@param abs string
---@param name string
---@param dest string
---@return norgopolis.Error?
function M.self_install(abs, name, dest)
  local target = dest .. "/" .. name
  local a, t = vim.uv.fs_realpath(abs), vim.uv.fs_realpath(target)
  if a and t and a == t then
    return {
      code = "AlreadyExists",
      message = ("%s is already installed: %s is the module itself, so there is nothing to install"):format(
        abs,
        target
      ),
    }
  end
end

--- Turns the CLI's stderr into an error table: it prints
--- "error: Code: message"; anything else (a crash, clap's usage errors) is
--- passed on whole.
---@param stderr string
---@param code integer exit status
---@return norgopolis.Error
function M.parse_error(stderr, code)
  local lines = vim.split(vim.trim(stderr), "\n", { trimempty = true })
  for _, line in ipairs(lines) do
    local c, msg = line:match("^error: (%u%a+): (.*)$")
    if c then
      return { code = c, message = msg }
    end
  end
  return {
    code = "Internal",
    message = ("%s exited with status %d%s"):format(
      M.cli_name,
      code,
      #lines > 0 and (": " .. table.concat(lines, " ")) or ""
    ),
  }
end

--- Installs a module (an executable or a module folder) into the user
--- modules dir; `cb(err, installed)` on the main loop.
---@param path string
---@param opts norgopolis.InstallOpts
---@param cb fun(err: norgopolis.Error?, installed: norgopolis.Installed?)
function M.install(path, opts, cb)
  local cfg = require("norgopolis.config").get()
  local function fail(err)
    vim.schedule(function()
      cb(err)
    end)
  end
  local cli = M.find_cli(cfg)
  if not cli.path then
    return fail({ code = "FailedPrecondition", message = cli.err })
  end
  local dirs, dest_err = M.destination(cfg)
  if not dirs then
    return fail({ code = "FailedPrecondition", message = dest_err })
  end
  -- Absolute, without a trailing slash, with ~ and $VARS expanded: the
  -- name defaults to the last component.
  local abs = vim.fn.fnamemodify(vim.fs.normalize(path), ":p"):gsub("(.)/+$", "%1")
  local itself = M.self_install(abs, opts.name or vim.fs.basename(abs), dirs[1])
  if itself then
    return fail(itself)
  end
  local ok, err = pcall(
    vim.system,
    M.command(cli.path, abs, opts, dirs),
    { text = true },
    vim.schedule_wrap(function(res)
      if res.code ~= 0 then
        return cb(M.parse_error(res.stderr or "", res.code))
      end
      local warnings = {}
      for _, line in ipairs(vim.split(res.stderr or "", "\n", { trimempty = true })) do
        table.insert(warnings, (line:gsub("^warning: ", "")))
      end
      cb(nil, { message = vim.trim(res.stdout or ""), warnings = warnings })
    end)
  )
  if not ok then
    fail({ code = "Internal", message = ("cannot run %s: %s"):format(cli.path, tostring(err)) })
  end
end

--- Parses `:Norgopolis install` words: `[--force] [--name NAME] {path}`.
---@param args string[]
---@return string? path
---@return norgopolis.InstallOpts|string opts_or_err
function M.parse_args(args)
  local opts, path = {}, nil
  local i = 1
  while i <= #args do
    local a = args[i]
    if a == "--force" or a == "-f" then
      opts.force = true
    elseif a == "--name" then
      i = i + 1
      opts.name = args[i]
      if not opts.name then
        return nil, "--name needs a module name"
      end
    elseif a:match("^%-%-name=") then
      opts.name = a:sub(8)
    elseif a:match("^%-") and a ~= "-" then
      return nil, ("unknown option %s"):format(a)
    elseif path then
      return nil, ("one path at a time (got %s and %s)"):format(path, a)
    else
      path = a
    end
    i = i + 1
  end
  if not path then
    return nil, "no path given"
  end
  return path, opts
end

return M
