-- One version for the Lua side, the native library, the server and the CLI:
-- the workspace version in Cargo.toml.
local helpers = require("helpers")
local norgopolis = require("norgopolis")

--- The `[workspace.package]` version in Cargo.toml.
---@return string
local function cargo_version()
  local in_section = false
  for _, line in ipairs(vim.fn.readfile(helpers.root .. "/Cargo.toml")) do
    if line:match("^%[") then
      in_section = line == "[workspace.package]"
    elseif in_section then
      local v = line:match('^version%s*=%s*"([^"]+)"')
      if v then
        return v
      end
    end
  end
  error("no [workspace.package] version in Cargo.toml")
end

---@param cmd string[]
---@return string
local function output(cmd)
  local res = vim.system(cmd, { text = true }):wait(10000)
  assert.equal(0, res.code, res.stderr)
  return vim.trim(res.stdout)
end

describe("version", function()
  it("version() is the workspace version of Cargo.toml", function()
    assert.equal("string", type(norgopolis.version()))
    assert.equal(cargo_version(), norgopolis.version())
  end)

  it("the native library, the server and the CLI report the same", function()
    local v = cargo_version()
    assert.equal(v, require("norgopolis.core").native().version)
    assert.equal("norgopolis-server " .. v, output({ helpers.server, "--version" }))
    local cli = vim.fs.dirname(helpers.server) .. "/norgopolis"
    assert.equal("norgopolis " .. v, output({ cli, "--version" }))
  end)

  it("the running server reports it in its status", function()
    assert.is_nil((helpers.await(norgopolis.attach)))
    local err, st = helpers.await(norgopolis.status)
    assert.is_nil(err)
    assert.equal(cargo_version(), st.version)
  end)

  it("a native library of another version is a clear call error and a health error", function()
    -- A second Neovim whose Lua side claims another version than its library.
    local proc = helpers
      .spawn_nvim([[
package.loaded["norgopolis.version"] = "9.9.9"
local np = require("norgopolis")
local ok, err = pcall(np.call, "echo", "echo", 1, function() end)
io.stdout:write(tostring(ok), "\n", tostring(err), "\n")
vim.cmd("checkhealth norgopolis")
io.stdout:write(table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n"))
vim.cmd("qa!")
]])
      :wait(30000)
    assert.equal(0, proc.code, proc.stderr)
    local lines = vim.split(proc.stdout, "\n")
    assert.equal("false", lines[1])
    assert.matches("native library version " .. vim.pesc(cargo_version()), lines[2])
    assert.matches(
      "does not match the Lua side's 9%.9%.9: to fix it, run `:Norgopolis build`",
      lines[2]
    )
    assert.matches("ERROR native library version", proc.stdout)
    -- The server-binary lookup is the native library's (the catalog's), so
    -- health names why it cannot look instead of guessing a second way.
    assert.matches(
      "ERROR cannot look for the server binary without the native library: native library version",
      proc.stdout
    )
  end)
end)
