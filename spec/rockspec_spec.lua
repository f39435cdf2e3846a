-- The rockspec installs a working plugin into a fresh tree, loadable from
-- there alone (no repository on 'runtimepath').
local helpers = require("helpers")

local ROCKSPEC = "rockspec/norgopolis-scm-1.rockspec"

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

    -- A Neovim that knows only the tree: it must find the rock's native
    -- library and server (NORGOPOLIS_SERVER unset), define :Norgopolis from
    -- the rock's plugin/, spawn its own server on its own socket and call echo.
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
    local file = helpers.tmp .. "/rock-child.lua"
    vim.fn.writefile(vim.split(script, "\n"), file)
    local child = vim
      .system({ vim.v.progpath, "--headless", "-u", "NONE", "-i", "NONE", "-l", file }, {
        text = true,
        env = {
          NORGOPOLIS_SERVER = "",
          NORGOPOLIS_SOCKET = helpers.tmp .. "/sock/rock.sock",
        },
      })
      :wait(60000)
    assert.equal(0, child.code, child.stdout .. child.stderr)
    assert.matches("native " .. vim.pesc(tree .. "/lib/lua/5.1/norgopolis/native.so"), child.stdout)
    assert.matches("server " .. vim.pesc(tree .. "/bin/norgopolis-server"), child.stdout)
    assert.matches("command 2", child.stdout)
    assert.matches("echo from the rock", child.stdout)
  end)
end)
