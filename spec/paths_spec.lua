local helpers = require("helpers")
local paths = require("norgopolis.paths")

describe("server lookup", function()
  local saved_env, saved_path
  before_each(function()
    saved_env, saved_path = vim.env.NORGOPOLIS_SERVER, vim.env.PATH
  end)
  after_each(function()
    vim.env.NORGOPOLIS_SERVER, vim.env.PATH = saved_env, saved_path
  end)

  it("the option comes first and is taken at its word", function()
    local found = paths.find_server(helpers.server)
    assert.equal(helpers.server, found.path)
    assert.equal("the `server` option", found.source)
    found = paths.find_server(helpers.tmp .. "/nope")
    assert.is_nil(found.path)
    assert.matches("not an executable file: fix the path or remove the option", found.err)
  end)

  it("then $NORGOPOLIS_SERVER, also taken at its word", function()
    vim.env.NORGOPOLIS_SERVER = helpers.server
    assert.equal("$NORGOPOLIS_SERVER", paths.find_server(nil).source)
    vim.env.NORGOPOLIS_SERVER = helpers.tmp .. "/nope"
    local found = paths.find_server(nil)
    assert.is_nil(found.path)
    assert.matches("fix or unset it", found.err)
  end)

  it("then the binary built next to the plugin", function()
    vim.env.NORGOPOLIS_SERVER = nil
    local found = paths.find_server(nil)
    assert.equal("built next to the plugin", found.source)
    assert.matches("^" .. vim.pesc(helpers.root) .. "/target/%a+/norgopolis%-server$", found.path)
  end)

  it("names every place it looked and how to fix it when nothing is found", function()
    vim.env.NORGOPOLIS_SERVER = nil
    vim.env.PATH = helpers.tmp
    local real = paths.plugin_root
    paths.plugin_root = function()
      return helpers.tmp
    end
    local found = paths.find_server(nil)
    paths.plugin_root = real
    assert.is_nil(found.path)
    assert.matches("target/release/norgopolis%-server", found.err)
    assert.matches("PATH", found.err)
    assert.matches("Norgopolis build", found.err)
    assert.matches("installed/current/bin/norgopolis%-server", found.err)
  end)
end)

describe("modules on disk", function()
  it("finds executables and manifest folders in order, first dir wins", function()
    local other = helpers.tmp .. "/more-mods"
    vim.fn.mkdir(other .. "/echo", "p")
    vim.fn.writefile({ "" }, other .. "/echo/module.toml")
    vim.fn.writefile({ "not executable" }, other .. "/plain")
    local found = paths.disk_modules({ helpers.modules, other, helpers.tmp .. "/missing" })
    local names = vim.tbl_map(function(m)
      return m.name .. "@" .. (m.path or m.error)
    end, found)
    -- As the server sees them: `plain` is a module that cannot load.
    assert.same({
      "echo@" .. helpers.modules .. "/echo",
      "notes@" .. helpers.modules .. "/notes",
      ("plain@module 'plain': %s/plain is not an executable file"):format(other),
    }, names)
  end)
end)

describe("modules dirs", function()
  it("the option wins, made absolute; then $NORGOPOLIS_MODULES_DIR; then the default", function()
    local cwd = vim.fn.getcwd()
    local dirs, source = paths.modules_dirs({ modules_dirs = { "rel/mods", "~/m" } })
    assert.equal("the `modules_dirs` option", source)
    assert.same({ cwd .. "/rel/mods", vim.fs.normalize("~/m") }, dirs)
    dirs, source = paths.modules_dirs({})
    assert.equal("$NORGOPOLIS_MODULES_DIR", source)
    assert.same({ helpers.modules }, dirs)
    local saved = vim.env.NORGOPOLIS_MODULES_DIR
    vim.env.NORGOPOLIS_MODULES_DIR = nil
    dirs, source = paths.modules_dirs({})
    vim.env.NORGOPOLIS_MODULES_DIR = saved
    assert.equal("the default", source)
    assert.same({ vim.env.XDG_DATA_HOME .. "/norgopolis/modules" }, dirs)
  end)
end)
