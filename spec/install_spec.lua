-- :Norgopolis install and require("norgopolis").install, through the real
-- `norgopolis` CLI (beside the server binary), into a modules dir of their
-- own so other specs keep seeing the shared one unchanged.
local helpers = require("helpers")
local norgopolis = require("norgopolis")

local src, dest

--- A module folder: the echo binary behind a manifest.
---@param name string
---@param extra? string[] more manifest lines
local function module_folder(name, extra)
  local dir = src .. "/" .. name
  vim.fn.mkdir(dir, "p")
  assert(vim.uv.fs_copyfile(helpers.echo, dir .. "/" .. name .. "-bin"))
  vim.uv.fs_chmod(dir .. "/" .. name .. "-bin", tonumber("755", 8))
  local lines = {
    ('name = "%s"'):format(name),
    'version = "1.2.0"',
    'description = "echo, installed"',
    ('exec = "%s-bin"'):format(name),
    'functions = ["echo"]',
  }
  vim.list_extend(lines, extra or {})
  vim.fn.writefile(lines, dir .. "/module.toml")
  return dir
end

--- Runs an Ex command; returns the plugin's messages once one matches.
local function run(cmd, pattern)
  return helpers.capture_notify(function()
    vim.cmd(cmd)
  end, function(msgs)
    for _, m in ipairs(msgs) do
      if m.msg:match(pattern) then
        return true
      end
    end
  end)
end

describe(":Norgopolis install", function()
  before_each(function()
    local base = helpers.tmp .. "/install-" .. vim.uv.hrtime()
    src, dest = base .. "/src", base .. "/user-modules"
    vim.fn.mkdir(src, "p")
    vim.fn.mkdir(dest, "p")
    -- Installs go to the first dir; the second is where the spec's echo is.
    -- A server started from here on searches both.
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
    norgopolis.setup({ modules_dirs = { dest, helpers.modules } })
  end)

  after_each(function()
    norgopolis.setup({})
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
  end)

  it("installs a module folder that a server then calls", function()
    local dir = module_folder("greeter")
    local msgs = run("Norgopolis install " .. vim.fn.fnameescape(dir), "greeter")
    assert.equal(vim.log.levels.INFO, msgs[1].level)
    assert.matches("installed greeter 1%.2%.0 at " .. vim.pesc(dest .. "/greeter"), msgs[1].msg)
    assert.is_not_nil(vim.uv.fs_stat(dest .. "/greeter/module.toml"))
    -- A server started now (with these dirs) finds and runs it.
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
    local v, err = norgopolis.call_sync("greeter", "echo", "hello", { timeout = 15000 })
    assert.is_nil(err)
    assert.same({ "hello" }, v)
  end)

  it("a running server can call a module installed while it runs", function()
    assert.is_nil((helpers.await(norgopolis.attach)))
    local err, installed = helpers.await(norgopolis.install, module_folder("latecomer"), {})
    assert.is_nil(err)
    assert.matches("installed latecomer", installed.message)
    local v, e = norgopolis.call_sync("latecomer", "echo", 7, { timeout = 15000 })
    assert.is_nil(e)
    assert.same({ 7 }, v)
  end)

  it("refuses to replace an installed module unless --force", function()
    local dir = module_folder("twice")
    run("Norgopolis install " .. dir, "installed twice")
    local msgs = run("Norgopolis install " .. dir, "failed")
    assert.equal(vim.log.levels.ERROR, msgs[1].level)
    assert.matches("install .* failed: AlreadyExists: .*already installed.*%-%-force", msgs[1].msg)
    msgs = run("Norgopolis install --force " .. dir, "replaced")
    assert.matches("replaced twice 1%.2%.0", msgs[1].msg)
  end)

  it("installs a bare executable, under another name with --name", function()
    local msgs = run("Norgopolis install --name renamed " .. helpers.echo, "renamed")
    assert.equal(vim.log.levels.INFO, msgs[1].level, msgs[1].msg)
    assert.matches("installed renamed at " .. vim.pesc(dest .. "/renamed"), msgs[1].msg)
    assert.equal(1, vim.fn.executable(dest .. "/renamed"))
  end)

  it("reports a bad manifest naming the file and the key", function()
    local dir = module_folder("broken", { "colour = 'blue'" })
    local msgs = run("Norgopolis install " .. dir, "failed")
    assert.equal(vim.log.levels.ERROR, msgs[1].level)
    assert.matches("FailedPrecondition", msgs[1].msg)
    assert.matches(vim.pesc(dir .. "/module.toml"), msgs[1].msg)
    assert.matches("colour", msgs[1].msg)
    assert.is_nil(vim.uv.fs_stat(dest .. "/broken"))
  end)

  it("reports a missing path, and a dependency that is not installed as a warning", function()
    local err = helpers.await(norgopolis.install, src .. "/nothing-here", {})
    assert.equal("NotFound", err.code)
    assert.matches("nothing%-here", err.message)
    local dir = module_folder("needy", { 'dependencies = ["ghost"]' })
    local msgs = run("Norgopolis install " .. dir, "ghost")
    local warned = vim.tbl_filter(function(m)
      return m.level == vim.log.levels.WARN
    end, msgs)
    assert.matches("ghost.*not installed", warned[1].msg)
  end)

  it("explains how to fix a missing CLI", function()
    -- A server binary with no CLI beside it, and no CLI on PATH.
    local lonely = helpers.tmp .. "/lonely-" .. vim.uv.hrtime()
    vim.fn.mkdir(lonely, "p")
    vim.uv.fs_symlink(helpers.server, lonely .. "/norgopolis-server")
    norgopolis.setup({ server = lonely .. "/norgopolis-server", modules_dirs = { dest } })
    local path = vim.env.PATH
    vim.env.PATH = "/usr/bin:/bin"
    local ok, msgs = pcall(run, "Norgopolis install " .. module_folder("unused"), "failed")
    vim.env.PATH = path
    assert(ok, msgs)
    assert.matches(
      "`norgopolis` command was not found %(looked at " .. vim.pesc(lonely .. "/norgopolis"),
      msgs[1].msg
    )
    assert.matches("Norgopolis build", msgs[1].msg)
  end)

  it("rejects bad usage", function()
    assert.matches("no path given", run("Norgopolis install", "usage")[1].msg)
    assert.matches("unknown option %-%-bogus", run("Norgopolis install --bogus x", "usage")[1].msg)
    assert.matches("one path at a time", run("Norgopolis install a b", "usage")[1].msg)
  end)

  it("completes file paths and its options", function()
    module_folder("completeme")
    local got = vim.fn.getcompletion("Norgopolis install " .. src .. "/compl", "cmdline")
    assert.same({ src .. "/completeme/" }, got)
    assert.same({ "--force" }, vim.fn.getcompletion("Norgopolis install --f", "cmdline"))
  end)
end)
