---@mod norgopolis.build Installs the native parts: a prebuilt archive, else cargo
---
--- Downloads `norgopolis-<version>-<platform>.tar.gz` for the plugin's own
--- version, checks it against its `.sha256`, unpacks it into
--- `<root>/installed/` and switches over with one rename
--- (`scripts/native.sh switch`). With no archive for this platform, or no
--- network, it builds with cargo when cargo is on PATH. A bad checksum or
--- archive is refused and the install in use is left as it was.
---
--- Run by `build.lua` (lazy.nvim, `nvim -l build.lua`), `:Norgopolis build`
--- and any plugin manager's hook: `require("norgopolis.build").run()`.

local M = {}

--- Where archives are downloaded from by default (`%s`: the version),
--- unless the `url` option or $NORGOPOLIS_DIST_URL name another base URL.
M.default_url = "https://github.com/nvim-neorg/norgopolis/releases/download/v%s"

--- Generous bound for a whole install (a cargo build on a slow machine).
local TIMEOUT_MS = 60 * 60 * 1000

---@class norgopolis.BuildOpts
---@field root? string the plugin's folder (default: the one holding this file)
---@field url? string base URL of the archives (default: $NORGOPOLIS_DIST_URL, else the releases)
---@field version? string version to install (default: the Lua side's)
---@field from? "auto"|"download"|"cargo" where from: `auto` downloads and falls back to cargo
---@field on_progress? fun(msg: string, kind: "step"|"output") steps, and the build's output lines

---@class norgopolis.NativeInstall
---@field version string
---@field platform string
---@field path string the install folder

local source = debug.getinfo(1, "S").source:gsub("^@", "")

--- The plugin's folder (holding `lua/`, `build.lua`, `scripts/`).
---@return string
function M.default_root()
  return vim.fn.fnamemodify(source, ":p:h:h:h")
end

---@return "gnu"|"musl"
local function libc()
  if vim.fn.glob("/lib/ld-musl-*", false, true)[1] then
    return "musl"
  end
  return "gnu"
end

--- What an archive must have been built for to run here: the Rust target
--- triple (arch, OS, libc) and the Neovim minor version the library is tied
--- to, e.g. `x86_64-unknown-linux-gnu-nvim0.11`.
---@return string? platform
---@return string? err
function M.platform()
  local u = vim.uv.os_uname()
  local arch = ({ x86_64 = "x86_64", amd64 = "x86_64", aarch64 = "aarch64", arm64 = "aarch64" })[u.machine]
  local os = ({ Linux = "unknown-linux-" .. libc(), Darwin = "apple-darwin" })[u.sysname]
  if not arch or not os then
    return nil, ("norgopolis has no builds for %s on %s"):format(u.sysname, u.machine)
  end
  local v = vim.version()
  return ("%s-%s-nvim%d.%d"):format(arch, os, v.major, v.minor)
end

---@param version string
---@param platform string
---@return string
function M.archive_name(version, platform)
  return ("norgopolis-%s-%s.tar.gz"):format(version, platform)
end

--- The install in use under `root`, as recorded in its VERSION file.
---@param root? string
---@return norgopolis.NativeInstall?
function M.installed(root)
  local dir = (root or M.default_root()) .. "/installed/current"
  local f = io.open(dir .. "/VERSION", "r")
  if not f then
    return nil
  end
  local line = f:read("*l") or ""
  f:close()
  local version, platform = line:match("^(%S+)%s+(%S+)")
  if not version then
    return nil
  end
  return { version = version, platform = platform, path = vim.uv.fs_realpath(dir) or dir }
end

--- Runs a command; `cb(err?, stdout)` on the main loop.
---@param cmd string[]
---@param opts { cwd?: string, on_line?: fun(line: string) }
---@param cb fun(err?: string, stdout: string)
local function exec(cmd, opts, cb)
  local out, errs = {}, {}
  local function collect(into)
    return function(_, data)
      if not data then
        return
      end
      table.insert(into, data)
      if opts.on_line then
        for line in data:gmatch("[^\r\n]+") do
          vim.schedule(function()
            opts.on_line(line)
          end)
        end
      end
    end
  end
  local ok, err = pcall(vim.system, cmd, {
    cwd = opts.cwd,
    text = true,
    stdout = collect(out),
    stderr = collect(errs),
  }, function(res)
    vim.schedule(function()
      if res.code ~= 0 then
        local msg = vim.trim(table.concat(errs) .. table.concat(out))
        cb(("%s exited with %d%s"):format(cmd[1], res.code, msg ~= "" and (": " .. msg) or ""), "")
      else
        cb(nil, table.concat(out))
      end
    end)
  end)
  if not ok then
    vim.schedule(function()
      cb(("cannot run %s: %s"):format(cmd[1], tostring(err)), "")
    end)
  end
end

--- The first tool found that prints a file's sha256.
---@return string[]?
local function sha256_command()
  for _, c in ipairs({
    { "sha256sum" },
    { "shasum", "-a", "256" },
    { "openssl", "dgst", "-sha256", "-r" },
  }) do
    if vim.fn.executable(c[1]) == 1 then
      return c
    end
  end
end

---@param path string
---@param cb fun(err?: string, sum?: string)
local function sha256(path, cb)
  local cmd = sha256_command()
  if not cmd then
    return cb("no sha256sum, shasum or openssl on PATH to verify the download")
  end
  exec(vim.list_extend(vim.deepcopy(cmd), { path }), {}, function(err, out)
    cb(err, out:match("%x+"))
  end)
end

---@param path string
---@return string?
local function read_file(path)
  local f = io.open(path, "r")
  if not f then
    return nil
  end
  local text = f:read("*a")
  f:close()
  return text
end

--- One run of the installer: its settings and how it reports.
---@class norgopolis.BuildRun
---@field root string
---@field version string
---@field platform? string
---@field platform_err? string
---@field base string
---@field from string
---@field step fun(msg: string)
---@field output fun(line: string)

--- Downloads, verifies, unpacks and switches to the archive.
---@param r norgopolis.BuildRun
---@param cb fun(err?: string, missing?: boolean) `missing`: no archive or no network (cargo may still help)
local function download(r, cb)
  if not r.platform then
    return cb(r.platform_err, true)
  end
  if vim.fn.executable("curl") ~= 1 then
    return cb("curl is not on PATH", true)
  end
  local name = M.archive_name(r.version, r.platform)
  local url = r.base:gsub("/+$", "") .. "/" .. name
  local tmp = ("%s/installed/.download-%d-%d"):format(r.root, vim.fn.getpid(), vim.uv.hrtime())
  vim.fn.mkdir(tmp .. "/unpacked", "p")
  local function finish(err, missing)
    vim.fn.delete(tmp, "rf")
    cb(err, missing)
  end
  local archive = tmp .. "/" .. name
  -- curl follows http_proxy/https_proxy/ALL_PROXY/NO_PROXY by itself.
  local curl = { "curl", "--fail", "--silent", "--show-error", "--location", "--retry", "2" }
  r.step("downloading " .. url)
  exec(vim.list_extend(vim.deepcopy(curl), { "-o", archive, url }), {}, function(err)
    if err then
      return finish(("no archive at %s (%s)"):format(url, err), true)
    end
    exec(
      vim.list_extend(vim.deepcopy(curl), { "-o", archive .. ".sha256", url .. ".sha256" }),
      {},
      function(err2)
        if err2 then
          return finish(("no checksum at %s.sha256 (%s)"):format(url, err2), true)
        end
        local want = (read_file(archive .. ".sha256") or ""):match("^%s*(%x+)")
        r.step("verifying sha256")
        sha256(archive, function(err3, got)
          if err3 then
            return finish(err3)
          end
          if not want or not got or want:lower() ~= got:lower() then
            return finish(
              ("checksum mismatch for %s: expected %s, got %s; the download was refused and the install in use is unchanged"):format(
                url,
                tostring(want),
                tostring(got)
              )
            )
          end
          r.step("unpacking")
          exec({ "tar", "-xzf", archive, "-C", tmp .. "/unpacked" }, {}, function(err4)
            local top = tmp .. "/unpacked/" .. name:gsub("%.tar%.gz$", "")
            local stamp = read_file(top .. "/VERSION")
            if err4 or not stamp or not vim.uv.fs_stat(top .. "/lib/native.so") then
              return finish(
                ("%s is not a usable archive (%s); it was refused and the install in use is unchanged"):format(
                  url,
                  err4 or "no VERSION or lib/native.so inside"
                )
              )
            end
            if vim.trim(stamp) ~= r.version .. " " .. r.platform then
              return finish(
                ("%s holds %s, not %s %s; it was refused"):format(
                  url,
                  vim.trim(stamp),
                  r.version,
                  r.platform
                )
              )
            end
            local dest = ("norgopolis-%s-%s-%s-%d"):format(
              r.version,
              r.platform,
              os.date("%Y%m%d%H%M%S"),
              vim.uv.hrtime() % 1000000
            )
            local ok, rerr = vim.uv.fs_rename(top, r.root .. "/installed/" .. dest)
            if not ok then
              return finish(("cannot move the unpacked archive into place: %s"):format(rerr))
            end
            r.step("switching to " .. dest)
            exec(
              { "sh", r.root .. "/scripts/native.sh", "switch", r.root, dest },
              {},
              function(err5)
                finish(err5)
              end
            )
          end)
        end)
      end
    )
  end)
end

--- Builds with cargo and switches to the result (`scripts/native.sh`).
---@param r norgopolis.BuildRun
---@param cb fun(err?: string)
local function cargo_build(r, cb)
  local script = r.root .. "/scripts/native.sh"
  r.step("building with cargo (this takes a few minutes)")
  exec({ "sh", script, "build" }, { cwd = r.root, on_line = r.output }, function(err)
    if err then
      return cb(err)
    end
    exec({ "sh", script, "install", r.root }, { cwd = r.root, on_line = r.output }, cb)
  end)
end

--- Installs the native parts for `opts.version` (see the module docs);
--- `on_done(err?, installed?)` runs on the main loop.
---@param opts? norgopolis.BuildOpts
---@param on_done fun(err?: string, installed?: norgopolis.NativeInstall)
function M.install(opts, on_done)
  opts = opts or {}
  local progress = opts.on_progress or function() end
  local platform, platform_err = M.platform()
  local env_url = vim.env.NORGOPOLIS_DIST_URL
  local version = opts.version or require("norgopolis.core").version
  ---@type norgopolis.BuildRun
  local r = {
    root = opts.root or M.default_root(),
    version = version,
    platform = platform,
    platform_err = platform_err,
    base = opts.url or (env_url and env_url ~= "" and env_url) or M.default_url:format(version),
    from = opts.from or "auto",
    step = function(msg)
      progress(msg, "step")
    end,
    output = function(line)
      progress(line, "output")
    end,
  }
  if not vim.tbl_contains({ "auto", "download", "cargo" }, r.from) then
    return on_done(("`from` must be auto, download or cargo, not %s"):format(tostring(r.from)))
  end
  local function done(err)
    if err then
      return on_done(err)
    end
    local inst = M.installed(r.root)
    r.step(
      ("installed norgopolis %s in %s"):format(
        inst and inst.version or "?",
        inst and inst.path or "?"
      )
    )
    on_done(nil, inst)
  end
  local function with_cargo(why)
    if vim.fn.executable("cargo") ~= 1 then
      return done(
        ("%s, and cargo is not on PATH. Either put norgopolis-%s-%s.tar.gz and its .sha256 where the `url` option or $NORGOPOLIS_DIST_URL point, or install Rust (https://rustup.rs) and run `:Norgopolis build` again (or `make` in %s)"):format(
          why,
          r.version,
          r.platform or "<platform>",
          r.root
        )
      )
    end
    if why then
      r.step(why .. "; building from source instead")
    end
    cargo_build(r, done)
  end
  if r.from == "cargo" then
    return with_cargo(nil)
  end
  download(r, function(err, missing)
    if err and missing and r.from == "auto" then
      return with_cargo(err)
    end
    done(err)
  end)
end

--- Installs and waits for the end: inside lazy.nvim's build task it yields
--- (lazy shows the progress), elsewhere it blocks on the event loop.
--- Progress goes to `opts.on_progress`, else to lazy, stdout (headless)
--- or `vim.notify` (steps only).
---@param opts? norgopolis.BuildOpts
---@return boolean ok
---@return string? err
function M.run(opts)
  opts = vim.deepcopy(opts or {})
  local lazy_async = package.loaded["lazy.async"]
  local in_lazy = lazy_async and lazy_async.running and lazy_async.running() ~= nil
  local queue = {}
  local has_ui = #vim.api.nvim_list_uis() > 0
  if not opts.on_progress then
    opts.on_progress = function(msg, kind)
      if in_lazy then
        table.insert(queue, msg)
      elseif not has_ui then
        io.stdout:write(msg, "\n")
      elseif kind == "step" then
        vim.notify("norgopolis build: " .. msg, vim.log.levels.INFO)
      end
    end
  end
  local finished, result = false, nil
  M.install(opts, function(err)
    finished, result = true, err
  end)
  if in_lazy then
    while not finished or #queue > 0 do
      coroutine.yield(table.remove(queue, 1))
    end
  elseif not vim.wait(TIMEOUT_MS, function()
    return finished
  end, 50) then
    return false, "the install did not finish in time"
  end
  return result == nil, result
end

return M
