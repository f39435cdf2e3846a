local helpers = require("helpers")
local norgopolis = require("norgopolis")

local checkhealth = helpers.checkhealth

describe(":checkhealth norgopolis", function()
  after_each(function()
    norgopolis.setup({})
  end)

  it("has no error on a good setup, with the server running", function()
    assert.is_nil((helpers.await(norgopolis.attach)))
    local out = checkhealth()
    assert.not_matches("ERROR", out)
    assert.matches("Neovim 0%.%d+", out)
    assert.matches(
      "norgopolis%.native "
        .. vim.pesc(norgopolis.version())
        .. " loaded from "
        .. vim.pesc(helpers.root .. "/lua/norgopolis/native.so"),
      out
    )
    assert.not_matches("WARNING", out)
    assert.matches(
      "OK server "
        .. vim.pesc(helpers.server)
        .. " %(found via %$NORGOPOLIS_SERVER%): version "
        .. vim.pesc(norgopolis.version()),
      out
    )
    assert.matches("OK CLI .*norgopolis %(found via .*%): version", out)
    assert.matches("OK options %(setup%(%) and vim%.g%.norgopolis%) are valid", out)
    assert.matches("OK config ok: no file at " .. vim.pesc(helpers.tmp .. "/config.toml"), out)
    assert.matches("running: pid %d+", out)
    assert.matches("notes 0%.3%.0", out)
    assert.matches("server log: " .. vim.pesc(helpers.log), out)
  end)

  it("has no error without a running server", function()
    assert.is_nil((helpers.await(norgopolis.shutdown)))
    helpers.await(norgopolis.detach)
    local out = checkhealth()
    assert.not_matches("ERROR", out)
    assert.matches("no server running", out)
  end)

  it("warns when the running server searches other modules dirs than configured", function()
    assert.is_nil((helpers.await(norgopolis.attach)))
    local other = helpers.tmp .. "/other-mods"
    vim.fn.mkdir(other, "p")
    norgopolis.setup({ modules_dirs = { other } })
    local out = checkhealth()
    assert.matches(
      "WARNING the running server searches "
        .. vim.pesc(helpers.modules)
        .. ", [^\n]*, not "
        .. vim.pesc(other),
      out
    )
    assert.matches(":Norgopolis restart", out)
  end)

  it("names the fix for a missing server binary", function()
    norgopolis.setup({ server = helpers.tmp .. "/missing/norgopolis-server" })
    local out = checkhealth()
    assert.matches("ERROR", out)
    assert.matches("not an executable file: fix the path or remove the option", out)
  end)

  it("names the fix for a bad modules dir", function()
    norgopolis.setup({ modules_dirs = { helpers.tmp .. "/no-such-dir" } })
    local out = checkhealth()
    assert.matches("ERROR.*no%-such%-dir %(from the `modules_dirs` option%) does not exist", out)
    assert.matches("create it and put modules there", out)
  end)

  --- A modules dir with one module of each kind of trouble.
  local function broken_modules()
    local dir = helpers.tmp .. "/broken-mods-" .. vim.uv.hrtime()
    vim.fn.mkdir(dir .. "/noexec", "p")
    vim.fn.writefile({ 'exec = "missing-bin"' }, dir .. "/noexec/module.toml")
    vim.fn.mkdir(dir .. "/needy", "p")
    vim.uv.fs_symlink(helpers.echo, dir .. "/needy/needy")
    vim.fn.writefile({ 'dependencies = ["ghost"]' }, dir .. "/needy/module.toml")
    vim.fn.mkdir(dir .. "/typo", "p")
    vim.uv.fs_symlink(helpers.echo, dir .. "/typo/typo")
    vim.fn.writefile({ "colour = 'blue'" }, dir .. "/typo/module.toml")
    vim.uv.fs_symlink(helpers.echo, dir .. "/fine")
    return dir
  end

  it("names the fix for broken modules, checked as the server loads them", function()
    local dir = broken_modules()
    norgopolis.setup({ modules_dirs = { dir } })
    local out = checkhealth()
    assert.matches("OK CLI ", out)
    assert.matches("ERROR module 'noexec': .*missing%-bin is not an executable file", out)
    assert.matches('ERROR needy: dependency "ghost" is not installed', out)
    assert.matches("install module ghost", out)
    -- unknown keys are caught (by the server's own manifest parser)
    assert.matches("ERROR module 'typo': bad manifest .*typo/module%.toml.*colour", out)
    assert.matches("norgopolis module remove typo", out)
    assert.matches("OK fine: ", out)
  end)

  it("without the CLI, warns and still checks modules as the server loads them", function()
    local dir = broken_modules()
    local lonely = helpers.tmp .. "/lonely-health-" .. vim.uv.hrtime()
    vim.fn.mkdir(lonely, "p")
    vim.uv.fs_symlink(helpers.server, lonely .. "/norgopolis-server")
    norgopolis.setup({ modules_dirs = { dir }, server = lonely .. "/norgopolis-server" })
    local path = vim.env.PATH
    vim.env.PATH = "/usr/bin:/bin"
    local ok, out = pcall(checkhealth)
    vim.env.PATH = path
    assert(ok, out)
    assert.matches("WARNING norgopolis CLI not found", out)
    -- The native library answers with the server's own rules: no CLI needed.
    assert.matches("ERROR module 'noexec': .*missing%-bin is not an executable file", out)
    assert.matches('needy: dependency "ghost" is not installed', out)
    assert.matches("ERROR module 'typo': bad manifest .*typo/module%.toml.*colour", out)
  end)

  it("reports a broken config.toml with file, line and key", function()
    local file = helpers.tmp .. "/config.toml"
    vim.fn.writefile({ 'linger = "3s"', "colour = 1" }, file)
    local ok, out = pcall(checkhealth)
    vim.fn.delete(file)
    assert(ok, out)
    assert.matches(
      "ERROR config file " .. vim.pesc(file) .. ", line 2, key `colour`: unknown field",
      out
    )
  end)

  it("reports bad vim.g.norgopolis under the configuration, not the native library", function()
    vim.g.norgopolis = { linger = {} }
    local ok, out = pcall(checkhealth)
    vim.g.norgopolis = nil
    assert(ok, out)
    local config_part = out:match("norgopolis: configuration ~(.-)norgopolis: native library ~")
    assert.matches("ERROR vim%.g%.norgopolis: linger must be", config_part)
    local native_part = out:match("norgopolis: native library ~(.-)norgopolis: binaries ~")
    assert.not_matches("ERROR", native_part)
    assert.not_matches("make build", native_part)
  end)

  it("warns when no module is found anywhere", function()
    local empty = helpers.tmp .. "/empty-mods-" .. vim.uv.hrtime()
    vim.fn.mkdir(empty, "p")
    local bundled = require("norgopolis.paths").bundled_modules_dir
    require("norgopolis.paths").bundled_modules_dir = function() end
    norgopolis.setup({ modules_dirs = { empty } })
    local ok, out = pcall(checkhealth)
    require("norgopolis.paths").bundled_modules_dir = bundled
    assert(ok, out)
    assert.matches("WARNING no modules found in " .. vim.pesc(empty), out)
  end)
end)
