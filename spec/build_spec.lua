-- The installer (build.lua, norgopolis.build) end to end: the archive
-- `make dist` wrote, served from a local HTTP server, installed into a fresh
-- clone with no cargo on PATH, then called from a Neovim that knows only the
-- clone. Plus what must be refused, and reinstalling under a Neovim that has
-- the library loaded.
local helpers = require("helpers")

local build = require("norgopolis.build")

local version = require("norgopolis.core").version
local platform = assert(build.platform())
local archive = build.archive_name(version, platform)

--- What a child printed (`print` goes to stderr under `nvim -l`).
---@param res vim.SystemCompleted
---@return string
local function output(res)
  return (res.stdout or "") .. (res.stderr or "")
end

---@param path string
---@return string
local function slurp(path)
  local f = assert(io.open(path, "rb"))
  local data = f:read("*a")
  f:close()
  return data
end

---@param path string
---@param data string
local function put(path, data)
  local f = assert(io.open(path, "wb"))
  f:write(data)
  f:close()
end

describe("installer", function()
  local www = helpers.tmp .. "/www"
  local clone = helpers.tmp .. "/clone"
  local server, base
  local no_cargo = helpers.path_without_cargo()

  --- `nvim -l build.lua` in the clone, from `base/<dir>`, without cargo.
  ---@param dir string
  ---@return vim.SystemCompleted
  local function install_from(dir)
    return vim
      .system({ vim.v.progpath, "--headless", "-u", "NONE", "-i", "NONE", "-l", "build.lua" }, {
        cwd = clone,
        text = true,
        env = { PATH = no_cargo, NORGOPOLIS_DIST_URL = base .. "/" .. dir },
      })
      :wait(120000)
  end

  --- Runs `body` in a headless Neovim that knows only the clone (its own
  --- server from installed/, the bundled modules, its own socket); returns
  --- what it printed.
  ---@param body string Lua source; `call()` returns echo's answer or the error
  ---@return vim.SystemCompleted
  local function in_clone_nvim(body)
    local script = ([[
      vim.opt.rtp:prepend(%q)
      local n = require("norgopolis")
      function call(what)
        local v, err = n.call_sync("echo", "echo", what, { timeout = 20000 })
        return err and (err.code .. " " .. err.message) or v[1]
      end
      %s
      local done = false
      n.shutdown(function() done = true end)
      vim.wait(5000, function() return done end)
      vim.cmd("qa!")
    ]]):format(clone, body)
    return helpers.run_lua(script, {
      PATH = no_cargo,
      NORGOPOLIS_SERVER = "",
      NORGOPOLIS_MODULES_DIR = clone .. "/installed/current/modules",
      NORGOPOLIS_SOCKET = helpers.tmp .. "/sock/build.sock",
      NORGOPOLIS_DIST_URL = base .. "/good",
    }, 180000)
  end

  setup(function()
    local dist = helpers.root .. "/dist/" .. archive
    assert(vim.uv.fs_stat(dist), dist .. " is missing: run `make dist` first (`make test` does)")
    local good = slurp(dist)
    local sum = slurp(dist .. ".sha256")
    for _, d in ipairs({ "good", "badsum", "corrupt", "empty" }) do
      vim.fn.mkdir(www .. "/" .. d, "p")
    end
    put(www .. "/good/" .. archive, good)
    put(www .. "/good/" .. archive .. ".sha256", sum)
    put(www .. "/badsum/" .. archive, good)
    put(www .. "/badsum/" .. archive .. ".sha256", ("0"):rep(64) .. "  " .. archive .. "\n")
    -- Cut short but announced with its own checksum: only unpacking shows it.
    put(www .. "/corrupt/" .. archive, good:sub(1, math.floor(#good / 2)))
    local summed = vim
      .system({ "sha256sum", archive }, { cwd = www .. "/corrupt", text = true })
      :wait()
    put(www .. "/corrupt/" .. archive .. ".sha256", summed.stdout)

    local port
    server = vim.system(
      { "python3", "-u", "-m", "http.server", "0", "--bind", "127.0.0.1", "--directory", www },
      {
        stdout = function(_, data)
          port = port or (data and data:match("port (%d+)"))
        end,
      }
    )
    helpers.wait(20000, function()
      return port ~= nil
    end, "the HTTP server to listen")
    base = "http://127.0.0.1:" .. port

    local res = vim
      .system({ "git", "clone", "--quiet", helpers.root, clone }, { text = true })
      :wait(60000)
    assert.equal(0, res.code, res.stderr)
  end)

  teardown(function()
    if server then
      server:kill(15)
    end
  end)

  it("installs the served archive into a fresh clone without cargo, and a call returns", function()
    local which = vim
      .system({ "sh", "-c", "command -v cargo" }, { env = { PATH = no_cargo } })
      :wait()
    assert.are_not.equal(0, which.code, "cargo is still reachable")
    local res = install_from("good")
    assert.equal(0, res.code, output(res))
    assert.matches("verifying sha256", output(res))
    local inst = assert(build.installed(clone), "no install recorded")
    assert.equal(version, inst.version)
    assert.equal(platform, inst.platform)
    assert.matches(
      'transport = "lean"',
      slurp(clone .. "/installed/current/modules/echo/module.toml"),
      1,
      true
    )

    local child = in_clone_nvim([[
      print("echo " .. call("from the archive"))
      print("native " .. require("norgopolis.core").native_path())
      print("server " .. require("norgopolis.paths").find_server(nil).path)
    ]])
    assert.equal(0, child.code, output(child))
    -- Answering at all proves echo spoke lean: the server fails a module
    -- declared lean that greets otherwise.
    assert.matches("echo from the archive", output(child))
    assert.matches("native " .. vim.pesc(clone .. "/lua/norgopolis/native.so"), output(child))
    assert.matches(
      "server " .. vim.pesc(clone .. "/installed/current/bin/norgopolis-server"),
      output(child)
    )
  end)

  --- Installs from `dir`, which must be refused with `reason`, leaving the
  --- install in use as it was and nothing half-unpacked behind.
  ---@param dir string
  ---@param reason string
  local function assert_refused(dir, reason)
    local before = vim.uv.fs_readlink(clone .. "/installed/current")
    local res = install_from(dir)
    assert.are_not.equal(0, res.code)
    assert.matches(reason, output(res))
    assert.equal(before, vim.uv.fs_readlink(clone .. "/installed/current"))
    for name in vim.fs.dir(clone .. "/installed") do
      assert.is_nil(name:match("^%.download"), "left behind: " .. name)
    end
  end

  it("refuses a checksum mismatch and keeps the install in use", function()
    assert_refused("badsum", "checksum mismatch")
    local child = in_clone_nvim([[print("echo " .. call("still here"))]])
    assert.matches("echo still here", output(child))
  end)

  it("refuses an archive that does not unpack and keeps the install in use", function()
    assert_refused("corrupt", "not a usable archive")
  end)

  it("without an archive for the platform or cargo, names both ways and the platform", function()
    local res = install_from("empty")
    assert.are_not.equal(0, res.code)
    assert.matches("no archive at", output(res))
    assert.matches(vim.pesc(archive), output(res))
    assert.matches("cargo is not on PATH", output(res))
    assert.matches("rustup", output(res))
    assert.matches("NORGOPOLIS_DIST_URL", output(res))
  end)

  it(
    "runs inside lazy.nvim's build task (yields progress) and from a dofile hook (mini.deps, vim.pack)",
    function()
      local saved_url, saved_lazy = vim.env.NORGOPOLIS_DIST_URL, package.loaded["lazy.async"]
      vim.env.NORGOPOLIS_DIST_URL = base .. "/good"
      -- What lazy.nvim does with a build.lua: loadfile and call it inside its
      -- async task, resuming it while it yields.
      package.loaded["lazy.async"] = {
        running = function()
          return {}
        end,
      }
      local before = vim.uv.fs_readlink(clone .. "/installed/current")
      local task = coroutine.create(assert(loadfile(clone .. "/build.lua")))
      local yielded = {}
      local ok, err = pcall(function()
        helpers.wait(60000, function()
          local resumed, msg = coroutine.resume(task)
          assert(resumed, msg)
          table.insert(yielded, msg)
          return coroutine.status(task) == "dead"
        end, "build.lua under the lazy-like runner")
      end)
      package.loaded["lazy.async"] = saved_lazy
      assert(ok, err)
      assert.is_true(vim.tbl_contains(yielded, "verifying sha256"), vim.inspect(yielded))
      local after_lazy = vim.uv.fs_readlink(clone .. "/installed/current")
      assert.are_not.equal(before, after_lazy)

      -- A post-install hook of mini.deps or vim.pack: dofile(path .. "/build.lua").
      ok, err = pcall(dofile, clone .. "/build.lua")
      vim.env.NORGOPOLIS_DIST_URL = saved_url
      assert(ok, err)
      assert.are_not.equal(after_lazy, vim.uv.fs_readlink(clone .. "/installed/current"))
    end
  )

  it("reinstalls under a Neovim that has the library loaded, which keeps calling", function()
    local child = in_clone_nvim(
      ([[
      print("first " .. call("one"))
      local loaded = vim.uv.fs_realpath(%q)
      local ino = vim.uv.fs_stat(loaded).ino
      local res = vim.system({ vim.v.progpath, "--headless", "-u", "NONE", "-i", "NONE", "-l", "build.lua" },
        { cwd = %q, text = true }):wait(120000)
      print("reinstall " .. res.code .. " " .. res.stderr)
      print("second " .. call("two"))
      print("moved " .. tostring(vim.uv.fs_realpath(%q) ~= loaded))
      local st = vim.uv.fs_stat(loaded)
      print("untouched " .. tostring(st ~= nil and st.ino == ino))
    ]]):format(
        clone .. "/lua/norgopolis/native.so",
        clone,
        clone .. "/lua/norgopolis/native.so"
      )
    )
    assert.equal(0, child.code, output(child))
    assert.matches("first one", output(child))
    assert.matches("reinstall 0", output(child))
    assert.matches("second two", output(child))
    assert.matches("moved true", output(child))
    assert.matches("untouched true", output(child))
  end)
end)

describe("make build-nvim", function()
  it(
    "replaces lua/norgopolis/native.so by a rename, so a Neovim that loaded it keeps calling",
    function()
      local so = helpers.root .. "/lua/norgopolis/native.so"
      local child = helpers.spawn_nvim(([[
      local ino = vim.uv.fs_stat(%q).ino
      local n = require("norgopolis")
      local function call(what)
        local v, err = n.call_sync("echo", "echo", what, { timeout = 20000 })
        return err and (err.code .. " " .. err.message) or v[1]
      end
      print("first " .. call("one"))
      local res = vim.system({ "make", "-s", "build-nvim" }, { cwd = %q, text = true }):wait(600000)
      print("rebuilt " .. res.code .. " " .. res.stderr)
      print("second " .. call("two"))
      print("renamed " .. tostring(vim.uv.fs_stat(%q).ino ~= ino))
      vim.cmd("qa!")
    ]]):format(so, helpers.root, so))
      local res = child:wait(600000)
      assert.equal(0, res.code, output(res))
      assert.matches("first one", output(res))
      assert.matches("rebuilt 0", output(res))
      assert.matches("second two", output(res))
      assert.matches("renamed true", output(res))
    end
  )
end)
