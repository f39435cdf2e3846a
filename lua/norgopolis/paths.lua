---@mod norgopolis.paths Where the plugin finds its server and modules

local M = {}

M.server_name = "norgopolis-server"

--- This file's path, resolved once.
local source = debug.getinfo(1, "S").source:gsub("^@", "")

--- The plugin's root: the directory holding `lua/`, `plugin/` and, when
--- built from source, `target/`.
---@return string
function M.plugin_root()
  return vim.fn.fnamemodify(source, ":p:h:h:h")
end

--- The luarocks tree this file was installed into, if any
--- (`<tree>/share/lua/5.1/norgopolis/paths.lua`).
---@return string?
function M.rock_tree()
  return source:match("^(.*)/share/lua/[^/]+/norgopolis/paths%.lua$")
end

--- How to (re)build the native library and server for this install.
---@return string
function M.build_hint()
  if M.rock_tree() then
    return "reinstall the rock: `luarocks --lua-version 5.1 make rockspec/norgopolis-scm-1.rockspec` in the norgopolis sources"
  end
  return "run `:Norgopolis build` (or `nvim -l build.lua`, or `make`) in " .. M.plugin_root()
end

---@param path string
---@return boolean
local function executable(path)
  local stat = vim.uv.fs_stat(path)
  return stat ~= nil and stat.type == "file" and vim.fn.executable(path) == 1
end

---@class norgopolis.ServerLookup
---@field path? string the binary, if found
---@field source string how it was found (or why not)
---@field tried string[] candidates looked at
---@field err? string what is wrong and how to fix it

--- Finds the server binary: the `server` option, $NORGOPOLIS_SERVER, the
--- binary installed or built next to the plugin (installed/current/bin,
--- target/release, then target/debug; or
--- the rock's bin/), then PATH. An explicit option or variable is taken at
--- its word: if it names no executable that is an error, not a reason to
--- start some other server.
---@param explicit? string
---@return norgopolis.ServerLookup
function M.find_server(explicit)
  if explicit then
    local p = vim.fs.normalize(explicit)
    if executable(p) then
      return { path = p, source = "the `server` option", tried = { p } }
    end
    return {
      source = "the `server` option",
      tried = { p },
      err = ("the `server` option names %s, which is not an executable file: fix the path or remove the option"):format(
        p
      ),
    }
  end
  local env = vim.env.NORGOPOLIS_SERVER
  if env and env ~= "" then
    if executable(env) then
      return { path = env, source = "$NORGOPOLIS_SERVER", tried = { env } }
    end
    return {
      source = "$NORGOPOLIS_SERVER",
      tried = { env },
      err = ("$NORGOPOLIS_SERVER names %s, which is not an executable file: fix or unset it"):format(
        env
      ),
    }
  end
  local tried = {}
  local root = M.plugin_root()
  local candidates = {
    root .. "/installed/current/bin/" .. M.server_name,
    root .. "/target/release/" .. M.server_name,
    root .. "/target/debug/" .. M.server_name,
  }
  local tree = M.rock_tree()
  if tree then
    table.insert(candidates, tree .. "/bin/" .. M.server_name)
  end
  for _, p in ipairs(candidates) do
    table.insert(tried, p)
    if executable(p) then
      return { path = p, source = "built next to the plugin", tried = tried }
    end
  end
  local on_path = vim.fn.exepath(M.server_name)
  table.insert(tried, "PATH")
  if on_path ~= "" then
    return { path = on_path, source = "PATH", tried = tried }
  end
  return {
    source = "nowhere",
    tried = tried,
    err = ("%s not found (looked at %s): %s, set the `server` option or $NORGOPOLIS_SERVER, or put it on PATH"):format(
      M.server_name,
      table.concat(tried, ", "),
      M.build_hint()
    ),
  }
end

--- The default user modules dir, `$XDG_DATA_HOME/norgopolis/modules`
--- (the same rule as the server's).
---@return string
function M.default_modules_dir()
  local data = vim.env.XDG_DATA_HOME
  if not data or data == "" then
    data = (vim.env.HOME or "") .. "/.local/share"
  end
  return data .. "/norgopolis/modules"
end

--- The modules dirs a server started by this Neovim searches: the
--- `modules_dirs` option, else $NORGOPOLIS_MODULES_DIR, else the default.
---@param cfg norgopolis.Config
---@return string[] dirs
---@return string source
function M.modules_dirs(cfg)
  if cfg.modules_dirs then
    -- Absolute: the server runs from "/" once it has daemonized.
    return vim.tbl_map(function(d)
      return (vim.fn.fnamemodify(vim.fs.normalize(d), ":p"):gsub("(.)/$", "%1"))
    end, cfg.modules_dirs),
      "the `modules_dirs` option"
  end
  local env = vim.env.NORGOPOLIS_MODULES_DIR
  if env and env ~= "" then
    return vim.tbl_filter(function(d)
      return d ~= ""
    end, vim.split(env, ":", { plain = true })),
      "$NORGOPOLIS_MODULES_DIR"
  end
  return { M.default_modules_dir() }, "the default"
end

--- The bundled modules, in the same order as the server binary is looked
--- for: the install in use (`installed/current/modules`, laid out by `make`
--- and the installer), else the development build's `target/modules`.
--- Searched after the user's dirs, so a module the user installs under the
--- same name wins. Nil when neither folder exists.
---@return string?
function M.bundled_modules_dir()
  local root = M.plugin_root()
  for _, dir in ipairs({ root .. "/installed/current/modules", root .. "/target/modules" }) do
    local stat = vim.uv.fs_stat(dir)
    if stat and stat.type == "directory" then
      return dir
    end
  end
  return nil
end

--- Every dir a server started by this Neovim searches, in order: the
--- user's (`modules_dirs`) then the bundled modules' dir.
---@param cfg norgopolis.Config
---@return string[] dirs
---@return string source of the user's dirs
function M.search_dirs(cfg)
  local dirs, source = M.modules_dirs(cfg)
  local bundled = M.bundled_modules_dir()
  if bundled and not vim.tbl_contains(dirs, bundled) then
    dirs = vim.list_extend(vim.deepcopy(dirs), { bundled })
  end
  return dirs, source
end

--- Whether `path` is the plugin's own folder or inside it (resolving
--- symlinks where the path exists).
---@param path string
---@return boolean
function M.inside_plugin(path)
  local function real(p)
    return (vim.uv.fs_realpath(p) or vim.fn.fnamemodify(p, ":p")):gsub("/+$", "")
  end
  local root = real(M.plugin_root())
  local p = real(path)
  return p == root or vim.startswith(p, root .. "/")
end

---@class norgopolis.DiskModule
---@field name string
---@field path string the bare executable or the module folder
---@field manifest? string path of module.toml, for folders

--- Modules found on disk, in search order (a name found twice is listed
--- once, from the first dir, as the server would pick it).
---@param dirs string[]
---@return norgopolis.DiskModule[]
function M.disk_modules(dirs)
  local found, seen = {}, {}
  for _, dir in ipairs(dirs) do
    local entries = {}
    if vim.fn.isdirectory(dir) == 1 then
      for name, kind in vim.fs.dir(dir) do
        table.insert(entries, { name = name, kind = kind })
      end
    end
    table.sort(entries, function(a, b)
      return a.name < b.name
    end)
    for _, e in ipairs(entries) do
      local path = dir .. "/" .. e.name
      if e.name:match("^[%w_-]+$") and not seen[e.name] then
        local stat = vim.uv.fs_stat(path)
        if stat and stat.type == "directory" then
          local manifest = path .. "/module.toml"
          if vim.uv.fs_stat(manifest) or executable(path .. "/" .. e.name) then
            seen[e.name] = true
            table.insert(found, {
              name = e.name,
              path = path,
              manifest = vim.uv.fs_stat(manifest) and manifest or nil,
            })
          end
        elseif stat and stat.type == "file" and executable(path) then
          seen[e.name] = true
          table.insert(found, { name = e.name, path = path })
        end
      end
    end
  end
  return found
end

return M
