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

--- The native library, which answers with the server's own rules (the
--- module catalog); nil and why when it is not built or loaded.
---@return table? native
---@return string? err
local function catalog()
  return require("norgopolis.core").load_native()
end

--- Where a server binary built or installed with the plugin would be, in
--- order: the install in use, the release build, the debug build, and the
--- rock's bin/. Only the plugin knows its own layout, so these stay here;
--- the order of the whole lookup is the catalog's.
---@return string[]
function M.server_candidates()
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
  return candidates
end

---@class norgopolis.ServerLookup
---@field path? string the binary, if found
---@field source string how it was found (or why not)
---@field tried string[] candidates looked at
---@field err? string what is wrong and how to fix it

--- How each step of the catalog's lookup is named to the user.
local server_sources = {
  explicit = "the `server` option",
  env = "$NORGOPOLIS_SERVER",
  beside = "built next to the plugin",
  path = "PATH",
}

--- Finds the server binary by the catalog's rule: the `server` option,
--- $NORGOPOLIS_SERVER, the binaries of [server_candidates()], then PATH.
--- An explicit option or variable is taken at its word: if it names no
--- executable that is an error, not a reason to start some other server.
---@param explicit? string
---@return norgopolis.ServerLookup
function M.find_server(explicit)
  local native, why = catalog()
  if not native then
    -- The lookup is the catalog's, in the native library; without it no
    -- server can be started or asked anyway.
    return {
      source = "nowhere",
      tried = {},
      err = "cannot look for the server binary without the native library: " .. tostring(why),
    }
  end
  local found = native.server_binary(explicit and vim.fs.normalize(explicit), M.server_candidates())
  if found.path then
    return { path = found.path, source = server_sources[found.source], tried = found.tried }
  end
  local lookup = { source = server_sources[found.refused] or "nowhere", tried = found.tried }
  if found.refused == "explicit" then
    lookup.err = ("the `server` option names %s, which is not an executable file: fix the path or remove the option"):format(
      found.tried[1]
    )
  elseif found.refused == "env" then
    lookup.err = ("$NORGOPOLIS_SERVER names %s, which is not an executable file: fix or unset it"):format(
      found.tried[1]
    )
  else
    lookup.err = ("%s not found (looked at %s): %s, set the `server` option or $NORGOPOLIS_SERVER, or put it on PATH"):format(
      M.server_name,
      table.concat(found.tried, ", "),
      M.build_hint()
    )
  end
  return lookup
end

---@class norgopolis.ModulesDirs
---@field dirs string[] the user's modules dirs, absolute, in search order
---@field search string[] `dirs` then the bundled modules' dir
---@field source string which rule chose `dirs`, in words

--- The modules dirs by the catalog's rule (the server's): the
--- `modules_dirs` option (passed as the rule's flags), else
--- $NORGOPOLIS_MODULES_DIR, else `modules_dirs` in config.toml, else
--- $XDG_DATA_HOME/norgopolis/modules.
---@param cfg norgopolis.Config
---@return norgopolis.ModulesDirs? dirs
---@return string? err why they cannot be resolved
function M.resolve_dirs(cfg)
  local native, why = catalog()
  if not native then
    return nil, why
  end
  local res, err = native.modules_dirs({
    flags = cfg.modules_dirs and vim.tbl_map(vim.fs.normalize, cfg.modules_dirs) or nil,
    fallbacks = { M.bundled_modules_dir() },
  })
  if not res then
    return nil, err
  end
  local names = {
    flags = "the `modules_dirs` option",
    env = "$NORGOPOLIS_MODULES_DIR",
    config = ("`modules_dirs` in %s"):format(res.config),
    default = "the default",
  }
  return { dirs = res.dirs, search = res.search, source = names[res.source] }
end

--- The modules dirs a server started by this Neovim searches (see
--- [resolve_dirs()]); none, with the reason as source, when they cannot be
--- resolved.
---@param cfg norgopolis.Config
---@return string[] dirs
---@return string source
function M.modules_dirs(cfg)
  local res, err = M.resolve_dirs(cfg)
  if not res then
    return {}, tostring(err)
  end
  return res.dirs, res.source
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
  local res, err = M.resolve_dirs(cfg)
  if not res then
    return {}, tostring(err)
  end
  return res.search, res.source
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
---@field path? string the bare executable or the module folder
---@field error string why the server could not load it ("" when it can)
---@field version? string
---@field description? string
---@field dependencies? string[]
---@field functions? { name: string, doc: string, args: string, result: string }[]

--- Modules found on disk, as the server would pick them (a name found twice
--- is listed once, from the first dir), each with its manifest's problem.
---@param dirs string[]
---@return norgopolis.DiskModule[]
function M.disk_modules(dirs)
  local native = catalog()
  return native and native.disk_modules(dirs) or {}
end

return M
