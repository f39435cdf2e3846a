---@mod norgopolis.health :checkhealth norgopolis
---
--- Every problem reported here says how to fix it.

local M = {}

local health = vim.health

---@param cmd string[]
---@return string? stdout
---@return string? err
local function run(cmd)
  local ok, proc = pcall(vim.system, cmd, { text = true })
  if not ok then
    return nil, tostring(proc)
  end
  local res = proc:wait(5000)
  if res.code ~= 0 then
    return nil, ("exited with code %s: %s"):format(tostring(res.code), vim.trim(res.stderr or ""))
  end
  return vim.trim(res.stdout or "")
end

local function check_neovim()
  health.start("norgopolis: Neovim")
  local v = vim.version()
  local text = ("%d.%d.%d"):format(v.major, v.minor, v.patch)
  if vim.version.lt(v, { 0, 11, 0 }) then
    health.error(
      "Neovim " .. text .. " is too old",
      { "norgopolis needs Neovim 0.11 or newer: upgrade Neovim" }
    )
  else
    health.ok("Neovim " .. text)
  end
end

--- `vim.g.norgopolis` and setup() options, and the server's config.toml
--- as the server itself reads it (`norgopolis-server --check-config`).
---@return norgopolis.Config cfg the effective options (the defaults when invalid)
local function check_configuration()
  health.start("norgopolis: configuration")
  local config = require("norgopolis.config")
  local ok, cfg = pcall(config.get)
  if ok then
    health.ok("options (setup() and vim.g.norgopolis) are valid")
  else
    health.error(tostring(cfg), {
      "fix the option in setup() or vim.g.norgopolis; the next call picks up the fix",
    })
    cfg = config.defaults
  end
  local server = require("norgopolis.paths").find_server(cfg.server)
  if not server.path then
    health.warn("config.toml not checked: no server binary (see below)")
    return cfg
  end
  local out, err = run({ server.path, "--check-config" })
  if out then
    health.ok(vim.split(out, "\n", { plain = true })[1])
  else
    health.error(err:gsub("^exited with code %d+: ", ""):gsub("^norgopolis%-server: ", ""), {
      "fix the config file as the message says; a server cannot start until then",
    })
  end
  return cfg
end

---@param cfg_ok boolean whether the options are valid (else the library is only loaded)
---@return table? native
local function check_native(cfg_ok)
  health.start("norgopolis: native library")
  local core = require("norgopolis.core")
  local native, err
  if cfg_ok then
    native, err = core.try_native()
  else
    native, err = core.load_native()
  end
  if not native then
    health.error(err or "cannot load norgopolis.native")
    return nil
  end
  health.ok(
    ("norgopolis.native %s loaded from %s (matches the Lua side)"):format(
      native.version,
      core.native_path() or "?"
    )
  )
  return native
end

--- Runs `path --version` and checks it reports `want` as version.
---@param path string
---@param what string the binary's name in messages
---@param found_via string
---@return boolean ok
local function check_binary_version(path, what, found_via)
  local version = require("norgopolis.core").version
  local out, err = run({ path, "--version" })
  if not out then
    health.error(("%s %s (found via %s) does not run: %s"):format(what, path, found_via, err), {
      require("norgopolis.paths").build_hint(),
      "or point the `server` option / $NORGOPOLIS_SERVER at a working binary",
    })
    return false
  end
  local reported = out:match("(%d+%.%d+%.%d+%S*)")
  if reported ~= version then
    health.error(
      ("%s %s (found via %s) is version %s, not %s like the plugin"):format(
        what,
        path,
        found_via,
        tostring(reported or out),
        version
      ),
      { require("norgopolis.paths").build_hint() }
    )
    return false
  end
  health.ok(("%s %s (found via %s): version %s"):format(what, path, found_via, reported))
  return true
end

---@param cfg norgopolis.Config
local function check_binaries(cfg)
  health.start("norgopolis: binaries")
  health.info("plugin version " .. require("norgopolis.core").version)
  local found = require("norgopolis.paths").find_server(cfg.server)
  if not found.path then
    health.error(found.err)
    return
  end
  check_binary_version(found.path, "server", found.source)
  local cli = require("norgopolis.install").find_cli(cfg)
  if cli.path then
    if check_binary_version(cli.path, "CLI", "the server binary or PATH") then
      health.info("the CLI runs `:Norgopolis install` and the module checks below")
    end
  else
    health.warn(
      "norgopolis CLI not found: `:Norgopolis install` cannot work and modules are checked less strictly",
      {
        cli.err,
      }
    )
  end
end

---@param native table
---@param cfg norgopolis.Config
local function check_runtime_dir(native, cfg)
  health.start("norgopolis: runtime dir")
  local places = native.places()
  local socket = cfg.socket and vim.fs.normalize(cfg.socket) or places.socket
  if not socket then
    health.error("cannot locate the runtime dir", { "set $XDG_RUNTIME_DIR or the `socket` option" })
    return
  end
  local dir = vim.fs.dirname(socket)
  health.info("socket: " .. socket)
  if not vim.uv.fs_stat(dir) then
    health.ok(dir .. " does not exist yet; it is created (mode 0700) when the server starts")
    return
  end
  local ok, err = native.check_dir(dir)
  if ok then
    health.ok(dir .. " exists, is yours and is private (0700)")
  else
    health.error(
      err,
      { "fix the directory as the message says, or choose another with the `socket` option" }
    )
  end
end

---@param native table
---@return table? status
local function check_server(native)
  health.start("norgopolis: server")
  local done, err, st = false, nil, nil
  -- A probe: never starts a server, never keeps one alive.
  local id, immediate = native.status(false)
  require("norgopolis.core").track(id, immediate, {
    on_done = function(e, result)
      done, err, st = true, e, result
    end,
  })
  if not vim.wait(5000, function()
    return done
  end, 10) then
    health.warn(
      "the server did not answer within 5 s",
      { "see the server log (`:Norgopolis log`)" }
    )
    return nil
  end
  if err then
    if err.code == "Unavailable" or err.code == "NotFound" then
      health.ok("no server running (fine: the first call starts one)")
      health.info("details: " .. err.message)
    else
      health.error(("cannot talk to the server: %s: %s"):format(err.code, err.message), {
        "restart it with `:Norgopolis restart`, or see the server log (`:Norgopolis log`)",
      })
    end
    return nil
  end
  health.ok(
    ("running: pid %d, version %s, up %s, %d session(s), %d call(s) in flight"):format(
      st.pid,
      st.version,
      require("norgopolis.ui").duration(st.uptime_ms),
      st.sessions,
      st.calls_in_flight
    )
  )
  local version = require("norgopolis.core").version
  if st.version ~= version then
    health.warn(
      ("the running server is version %s, not %s like the plugin"):format(st.version, version),
      { "restart it with `:Norgopolis restart` to run this version" }
    )
  end
  local session = require("norgopolis.core").session
  if session and session.transport then
    health.info("this Neovim's calls travel over " .. session.transport)
  end
  for _, m in ipairs(st.modules) do
    health.info(
      ("module %s: %s, pid %d, %d calls served"):format(m.name, m.state, m.pid, m.calls_served)
    )
  end
  return st
end

---@param dirs string[]
local function no_modules(dirs)
  health.warn("no modules found in " .. table.concat(dirs, ", "), {
    "install one with `:Norgopolis install {path}` (an executable named after the module, or a folder with module.toml)",
  })
end

---@param s any
---@return string?
local function nonempty(s)
  return type(s) == "string" and s ~= "" and s or nil
end

--- Lists the declared signatures of `module`'s functions (manifest-style
--- entries: a name, or a table `{ name, args?, result? }`).
---@param module string
---@param functions any[]
local function report_signatures(module, functions)
  local complete = require("norgopolis.complete")
  for _, f in ipairs(type(functions) == "table" and functions or {}) do
    if type(f) == "table" and (nonempty(f.args) or nonempty(f.result)) then
      local sig = { args = nonempty(f.args), result = nonempty(f.result) }
      health.info(("%s.%s %s"):format(module, tostring(f.name), complete.format_signature(sig)))
    end
  end
end

--- Reports each module on disk (the catalog's records, as `module list
--- --json` prints them): its own error, else its dependencies
--- (transitively usable), else what it is.
---@param listed table[]
local function check_listed(listed)
  local by_name = {}
  for _, m in ipairs(listed) do
    by_name[m.name] = m
  end
  for _, m in ipairs(listed) do
    if m.error ~= "" then
      health.error(m.error, {
        ("fix it as the message says, or remove the module with `norgopolis module remove %s`"):format(
          m.name
        ),
      })
    else
      local problems = {}
      for _, dep in ipairs(m.dependencies or {}) do
        local d = by_name[dep]
        if not d then
          table.insert(problems, {
            ("%s: dependency %q is not installed"):format(m.name, dep),
            ("install module %s (`:Norgopolis install {path}`)"):format(dep),
          })
        elseif d.error ~= "" then
          table.insert(problems, {
            ("%s: dependency %q is broken (see its error)"):format(m.name, dep),
            ("fix module %s"):format(dep),
          })
        end
      end
      for _, p in ipairs(problems) do
        health.error(p[1], { p[2] })
      end
      if #problems == 0 then
        local about = m.description ~= "" and m.description or m.path
        health.ok(("%s%s: %s"):format(m.name, m.version ~= "" and (" " .. m.version) or "", about))
        report_signatures(m.name, m.functions)
      end
    end
  end
end

---@param cfg norgopolis.Config
---@param status? table
local function check_modules(cfg, status)
  health.start("norgopolis: modules")
  local paths = require("norgopolis.paths")
  local resolved, err = paths.resolve_dirs(cfg)
  if not resolved then
    health.error("cannot tell which modules dirs the server searches: " .. tostring(err), {
      "fix what the message names (the server would refuse to start the same way)",
    })
    return
  end
  local dirs, source = resolved.search, resolved.source
  local bundled = paths.bundled_modules_dir()
  if status then
    local function absolute(list)
      return vim.tbl_map(function(d)
        return (vim.fn.fnamemodify(d, ":p"):gsub("(.)/+$", "%1"))
      end, list)
    end
    if vim.deep_equal(absolute(status.modules_dirs), absolute(dirs)) then
      health.info("the running server searches: " .. table.concat(status.modules_dirs, ", "))
    else
      health.warn(
        ("the running server searches %s, not %s (from %s)"):format(
          table.concat(status.modules_dirs, ", "),
          table.concat(dirs, ", "),
          source
        ),
        {
          "it was started with other settings: `:Norgopolis restart` starts one with this Neovim's",
        }
      )
    end
  end
  local explicit = source ~= "the default"
  local any_dir = false
  for _, dir in ipairs(dirs) do
    local stat = vim.uv.fs_stat(dir)
    if dir == bundled then
      any_dir = true
      health.ok(("modules dir %s (the bundled modules, searched last)"):format(dir))
    elseif not stat then
      if explicit then
        health.error(("modules dir %s (from %s) does not exist"):format(dir, source), {
          "create it and put modules there, or fix " .. source,
        })
      else
        health.ok(("modules dir %s does not exist yet (no modules installed)"):format(dir))
      end
    elseif stat.type ~= "directory" then
      health.error(
        ("modules dir %s (from %s) is not a directory"):format(dir, source),
        { "fix " .. source }
      )
    else
      any_dir = true
      health.ok(("modules dir %s (from %s)"):format(dir, source))
    end
  end
  if not any_dir then
    no_modules(dirs)
    return
  end
  -- The catalog's records, as `norgopolis module list --json` prints them.
  local listed = paths.disk_modules(dirs)
  if #listed == 0 then
    no_modules(dirs)
  end
  check_listed(listed)
end

---@param native table
---@param status? table
local function check_log(native, status)
  health.start("norgopolis: log")
  local path = status and status.log_path or native.places().log
  if not path then
    health.warn("cannot locate the server log", { "set $XDG_STATE_HOME or $NORGOPOLIS_LOG" })
    return
  end
  local stat = vim.uv.fs_stat(path)
  if stat then
    health.ok(("server log: %s (%d bytes); open it with `:Norgopolis log`"):format(path, stat.size))
  else
    health.ok(("server log: %s (not written yet)"):format(path))
  end
end

--- The `--module-config` values in a running server's command line, by
--- module name, decoded; nil where the command line cannot be read (no
--- /proc).
---@param pid integer
---@return table<string, any>?
local function server_module_configs(pid)
  local f = io.open(("/proc/%d/cmdline"):format(pid), "rb")
  if not f then
    return nil
  end
  local argv = vim.split(f:read("*a") or "", "\0", { plain = true })
  f:close()
  local found = {}
  for i, arg in ipairs(argv) do
    local value = arg:match("^%-%-module%-config=(.*)$")
      or (arg == "--module-config" and argv[i + 1])
    local name, json = (value or ""):match("^([^=]+)=(.*)$")
    if name then
      local ok, decoded = pcall(vim.json.decode, json)
      found[name] = ok and decoded or json
    end
  end
  return found
end

--- Module configuration: what setup() passes to a server this Neovim
--- starts, and whether the running server got the same.
---@param cfg norgopolis.Config?
---@param status table? the running server's status
local function check_module_config(cfg, status)
  health.start("norgopolis: module configuration")
  local config = require("norgopolis.config")
  local mine = {}
  for i, arg in ipairs(config.module_config_args(cfg and cfg.modules)) do
    local name, json = arg:match("^([^=]+)=(.*)$")
    if name and i % 2 == 0 then
      mine[name] = vim.json.decode(json)
    end
  end
  local names = vim.tbl_keys(mine)
  table.sort(names)
  health.info(
    #names > 0
        and ("the `modules` option configures: %s (for servers this Neovim starts)"):format(
          table.concat(names, ", ")
        )
      or "the `modules` option is not set; modules get their `[modules.NAME]` table of the server's config.toml"
  )
  if not status then
    return
  end
  local theirs = server_module_configs(status.pid)
  if theirs and next(theirs) == nil and #names == 0 then
    return
  elseif not theirs then
    health.info("the running server keeps the module configuration it was started with")
  elseif vim.deep_equal(theirs, mine) then
    health.ok("the running server was started with this Neovim's `modules` option")
  else
    local differ = {}
    for name in pairs(vim.tbl_extend("force", {}, mine, theirs)) do
      if not vim.deep_equal(mine[name], theirs[name]) then
        table.insert(differ, name)
      end
    end
    table.sort(differ)
    health.warn(
      ("the running server (pid %d) was started with another module configuration for: %s"):format(
        status.pid,
        table.concat(differ, ", ")
      ),
      {
        "a running server keeps the configuration it was started with (it may have been started by another front end)",
        "`:Norgopolis restart` starts one with this Neovim's settings",
      }
    )
  end
end

function M.check()
  check_neovim()
  local cfg = check_configuration()
  local cfg_ok = pcall(require("norgopolis.config").get)
  local native = check_native(cfg_ok)
  check_binaries(cfg)
  if not native then
    return
  end
  check_runtime_dir(native, cfg)
  local status = check_server(native)
  check_modules(cfg, status)
  check_module_config(cfg, status)
  check_log(native, status)
end

return M
