-- A new user's first steps: the README's Neovim examples run as written on
-- a fresh install (no modules of their own, nothing configured), and
-- installs never touch the plugin's own folder.
local helpers = require("helpers")
local norgopolis = require("norgopolis")

--- The ```lua blocks of the README's "## Neovim" section, in order.
---@return string[]
local function readme_lua_blocks()
  local text = table.concat(vim.fn.readfile(helpers.root .. "/README.md"), "\n")
  local section = text:match("\n## Neovim\n(.-)\n## ") or text:match("\n## Neovim\n(.*)$")
  assert(section, "README has no ## Neovim section")
  local blocks = {}
  for block in section:gmatch("```lua\n(.-)\n```") do
    table.insert(blocks, block)
  end
  return blocks
end

--- Environment of a fresh install: own socket and XDG dirs, no modules
--- dir, no server named (found beside the plugin).
---@return table env
local function fresh_env()
  local home = helpers.tmp .. "/fresh-" .. vim.uv.hrtime()
  vim.fn.mkdir(home .. "/run", "p", "0o700")
  return {
    HOME = home,
    XDG_RUNTIME_DIR = home .. "/run",
    XDG_DATA_HOME = home .. "/data",
    XDG_STATE_HOME = home .. "/state",
    XDG_CONFIG_HOME = home .. "/config",
    NORGOPOLIS_SOCKET = home .. "/run/np.sock",
    NORGOPOLIS_LOG = home .. "/server.log",
    NORGOPOLIS_MODULES_DIR = "",
    NORGOPOLIS_SERVER = "",
    NORGOPOLIS_CONFIG = "",
  }
end

describe("first use", function()
  it("the README's Neovim examples run verbatim with the bundled modules", function()
    local blocks = readme_lua_blocks()
    assert.is_true(#blocks >= 2, "expected the call and the events examples")
    local script = {
      "local printed = {}",
      "print = function(...) table.insert(printed, table.concat(vim.tbl_map(tostring, { ... }), ' ')) end",
      "local notified = {}",
      "vim.notify = function(m) table.insert(notified, m) end",
    }
    -- One chunk, as a user pastes them: later blocks use the first's locals.
    vim.list_extend(script, {
      "local ok, err = pcall(function()",
      table.concat(blocks, "\n"),
      "end)",
      "if not ok then io.stdout:write('EXAMPLES FAILED: ', tostring(err), '\\n') end",
    })
    vim.list_extend(script, {
      "vim.wait(10000, function() return #vim.tbl_filter(function(l) return l:match('^item') end, printed) >= 3 and #vim.tbl_filter(function(l) return l:match('inbox') end, printed) >= 1 end, 10)",
      "io.stdout:write(table.concat(printed, '\\n'), '\\n', 'NOTIFIED: ', table.concat(notified, ' | '), '\\n')",
      "local done = false",
      "require('norgopolis').shutdown(function() done = true end)",
      "vim.wait(5000, function() return done end, 10)",
      "vim.cmd('qa!')",
    })
    local proc = helpers.spawn_nvim(table.concat(script, "\n"), { env = fresh_env() }):wait(60000)
    assert.equal(0, proc.code, proc.stdout .. proc.stderr)
    assert.not_matches("FAILED", proc.stdout)
    for i = 0, 2 do
      assert.matches("\nitem " .. i .. "\n", "\n" .. proc.stdout)
    end
    assert.matches("notes inbox%.norg", proc.stdout)
    assert.matches("NOTIFIED: \n", proc.stdout)
  end)

  it("the bundled modules are searched after the user's dirs", function()
    local dirs = require("norgopolis.paths").search_dirs({ modules_dirs = { "/a" } })
    assert.same({ "/a", helpers.root .. "/target/modules" }, dirs)
  end)
end)

describe("installing from Neovim", function()
  local install = require("norgopolis.install")

  after_each(function()
    norgopolis.setup({})
  end)

  it("never writes into the plugin's own folder", function()
    local own = helpers.root .. "/target/modules"
    local mine = helpers.tmp .. "/my-mods"
    norgopolis.setup({ modules_dirs = { own, mine } })
    local dirs = install.destination(require("norgopolis.config").get())
    assert.equal(mine, dirs[1])
    norgopolis.setup({ modules_dirs = { own } })
    local err = helpers.await(norgopolis.install, helpers.echo, { name = "echo2" })
    assert.equal("FailedPrecondition", err.code)
    assert.matches("inside the plugin's folder", err.message)
    assert.is_nil(vim.uv.fs_lstat(own .. "/echo2"))
  end)

  it("--force over a module that is its own source leaves it alone", function()
    local dir = helpers.tmp .. "/self-mods-" .. vim.uv.hrtime()
    vim.fn.mkdir(dir, "p")
    vim.uv.fs_symlink(helpers.echo, dir .. "/echo")
    norgopolis.setup({ modules_dirs = { dir } })
    local err = helpers.await(norgopolis.install, helpers.echo, { force = true })
    assert.equal("AlreadyExists", err.code)
    assert.matches("is the module itself", err.message)
    -- still the symlink, not a copy
    assert.equal("link", vim.uv.fs_lstat(dir .. "/echo").type)
    err = helpers.await(norgopolis.install, dir .. "/echo", { force = true })
    assert.equal("AlreadyExists", err.code)
    assert.equal("link", vim.uv.fs_lstat(dir .. "/echo").type)
  end)
end)
