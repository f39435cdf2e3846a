-- The rockspec installs a working plugin into a fresh tree, loadable from
-- there alone (no repository on 'runtimepath').
local helpers = require("helpers")

local ROCKSPEC = "rockspec/norgopolis-scm-1.rockspec"

--- A Neovim that knows only the tree: it must find the rock's native
--- library and server (NORGOPOLIS_SERVER unset), define :Norgopolis from
--- the rock's plugin/, spawn its own server on its own socket and call echo.
---@param tree string
---@param name string socket name
local function assert_loads_from(tree, name)
  local rockdir = tree .. "/lib/luarocks/rocks-5.1/norgopolis/scm-1"
  local script = ([[
    package.path = %q .. "/share/lua/5.1/?.lua;" .. %q .. "/share/lua/5.1/?/init.lua;" .. package.path
    package.cpath = %q .. "/lib/lua/5.1/?.so;" .. package.cpath
    vim.opt.rtp:prepend(%q)
    vim.cmd.runtime("plugin/norgopolis.lua")
    local out = {}
    out[#out + 1] = "native " .. package.searchpath("norgopolis.native", package.cpath)
    out[#out + 1] = "server " .. tostring(require("norgopolis.paths").find_server(nil).path)
    out[#out + 1] = "command " .. vim.fn.exists(":Norgopolis")
    local n = require("norgopolis")
    local v, err = n.call_sync("echo", "echo", "from the rock", { timeout = 20000 })
    out[#out + 1] = "echo " .. (err and (err.code .. " " .. err.message) or v[1])
    local done = false
    n.shutdown(function() done = true end)
    vim.wait(5000, function() return done end)
    io.stdout:write(table.concat(out, "\n") .. "\n")
    vim.cmd("qa!")
  ]]):format(tree, tree, tree, rockdir)
  local child = helpers.run_lua(script, {
    NORGOPOLIS_SERVER = "",
    NORGOPOLIS_SOCKET = helpers.tmp .. "/sock/" .. name .. ".sock",
  }, 60000)
  assert.equal(0, child.code, child.stdout .. child.stderr)
  assert.matches("native " .. vim.pesc(tree .. "/lib/lua/5.1/norgopolis/native.so"), child.stdout)
  assert.matches("server " .. vim.pesc(tree .. "/bin/norgopolis-server"), child.stdout)
  assert.matches("command 2", child.stdout)
  assert.matches("echo from the rock", child.stdout)
end

describe("rockspec", function()
  it("lists every Lua module of the plugin", function()
    local text = table.concat(vim.fn.readfile(helpers.root .. "/" .. ROCKSPEC), "\n")
    for name, kind in vim.fs.dir(helpers.root .. "/lua/norgopolis") do
      if kind == "file" and name:match("%.lua$") then
        assert.matches('"lua/norgopolis/' .. name .. '"', text, 1, true)
      end
    end
  end)

  it("installs with luarocks make into a temporary tree and loads from there", function()
    assert.equal(
      1,
      vim.fn.executable("luarocks"),
      "luarocks is missing: install it with `apt-get install luarocks` (make deps-busted does)"
    )
    local tree = helpers.tmp .. "/rocktree"
    local res = vim
      .system({ "luarocks", "--lua-version", "5.1", "make", "--tree", tree, ROCKSPEC }, {
        cwd = helpers.root,
        text = true,
        env = { NORGOPOLIS_ROCK_PROFILE = "debug" },
      })
      :wait(900000)
    assert.equal(0, res.code, res.stdout .. res.stderr)

    local rockdir = tree .. "/lib/luarocks/rocks-5.1/norgopolis/scm-1"
    for _, f in ipairs({
      tree .. "/share/lua/5.1/norgopolis.lua",
      tree .. "/share/lua/5.1/norgopolis/core.lua",
      tree .. "/lib/lua/5.1/norgopolis/native.so",
      tree .. "/bin/norgopolis-server",
      tree .. "/bin/norgopolis",
      rockdir .. "/plugin/norgopolis.lua",
    }) do
      assert.is_not_nil(vim.uv.fs_stat(f), f .. " not installed")
    end

    assert_loads_from(tree, "rock")
  end)

  it("installs with luarocks install of the rockspec, its source fetched by git", function()
    -- The rockspec as published, but its source is this repository (HEAD:
    -- what is committed) instead of the public URL, which this machine
    -- cannot reach. Its own target dir keeps the clone's build from
    -- replacing the binaries the other tests run.
    local text = table.concat(vim.fn.readfile(helpers.root .. "/" .. ROCKSPEC), "\n")
    local url = text:match('url = "(git%+https://[^"]+)"')
    assert.is_not_nil(url, "the rockspec's source.url is a git URL")
    local dir = helpers.tmp .. "/rockspec-git"
    vim.fn.mkdir(dir, "p")
    local local_spec = dir .. "/norgopolis-scm-1.rockspec"
    local rewritten = text:gsub(vim.pesc(url), "git+file://" .. helpers.root)
    vim.fn.writefile(vim.split(rewritten, "\n"), local_spec)
    local tree = helpers.tmp .. "/gittree"
    local res = vim
      .system({ "luarocks", "--lua-version", "5.1", "install", "--tree", tree, local_spec }, {
        cwd = dir,
        text = true,
        env = {
          NORGOPOLIS_ROCK_PROFILE = "debug",
          CARGO_TARGET_DIR = helpers.root .. "/target/rock-install",
        },
      })
      :wait(1800000)
    assert.equal(0, res.code, res.stdout .. res.stderr)
    assert_loads_from(tree, "gitrock")
  end)

  it(
    "packs a binary rock that installs without cargo, also under a Neovim that has it loaded",
    function()
      local tree = helpers.tmp .. "/rocktree" -- installed by the test before
      local packed = helpers.tmp .. "/rockpack"
      vim.fn.mkdir(packed, "p")
      local res = vim
        .system({ "luarocks", "--lua-version", "5.1", "pack", "--tree", tree, "norgopolis", "scm-1" }, {
          cwd = packed,
          text = true,
        })
        :wait(120000)
      assert.equal(0, res.code, res.stdout .. res.stderr)
      local rock = vim.fn.glob(packed .. "/norgopolis-scm-1.*.rock", false, true)[1]
      assert.is_not_nil(rock, "no rock in " .. packed .. ": " .. res.stdout)
      assert.is_nil(rock:match("%.src%.rock$"), rock .. " is a source rock")

      local bintree = helpers.tmp .. "/bintree"
      local install =
        { "luarocks", "--lua-version", "5.1", "install", "--force", "--tree", bintree, rock }
      local no_cargo = { PATH = helpers.path_without_cargo() }
      res = vim.system(install, { text = true, env = no_cargo }):wait(120000)
      assert.equal(0, res.code, res.stdout .. res.stderr)
      assert_loads_from(bintree, "binrock")

      -- Reinstalled while a Neovim has the library loaded: that Neovim keeps
      -- calling, and the library it loaded was replaced, not written into.
      local so = bintree .. "/lib/lua/5.1/norgopolis/native.so"
      local script = ([[
      package.path = %q .. "/share/lua/5.1/?.lua;" .. package.path
      package.cpath = %q .. "/lib/lua/5.1/?.so;" .. package.cpath
      local n = require("norgopolis")
      local function call(what)
        local v, err = n.call_sync("echo", "echo", what, { timeout = 20000 })
        return err and (err.code .. " " .. err.message) or v[1]
      end
      local out = { "first " .. call("one") }
      local ino = vim.uv.fs_stat(%q).ino
      local res = vim.system(%s, { text = true }):wait(120000)
      out[#out + 1] = "reinstall " .. res.code .. " " .. res.stderr
      out[#out + 1] = "second " .. call("two")
      out[#out + 1] = "replaced " .. tostring(vim.uv.fs_stat(%q).ino ~= ino)
      local done = false
      n.shutdown(function() done = true end)
      vim.wait(5000, function() return done end)
      io.stdout:write(table.concat(out, "\n") .. "\n")
      vim.cmd("qa!")
    ]]):format(bintree, bintree, so, vim.inspect(install), so)
      local child = helpers.run_lua(script, {
        PATH = no_cargo.PATH,
        NORGOPOLIS_SERVER = "",
        NORGOPOLIS_SOCKET = helpers.tmp .. "/sock/rere.sock",
      }, 180000)
      assert.equal(0, child.code, child.stdout .. child.stderr)
      assert.matches("first one", child.stdout)
      assert.matches("reinstall 0", child.stdout)
      assert.matches("second two", child.stdout)
      assert.matches("replaced true", child.stdout)
    end
  )
end)
