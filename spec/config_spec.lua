local config = require("norgopolis.config")
local norgopolis = require("norgopolis")

local function invalid(opts)
  local ok, err = config.validate(opts, "opts")
  assert.is_false(ok)
  return err
end

describe("config", function()
  after_each(function()
    vim.g.norgopolis = nil
    norgopolis.setup({})
  end)

  it("accepts the documented options", function()
    assert.is_true(config.validate({
      socket = "/tmp/x.sock",
      server = "/usr/bin/norgopolis-server",
      modules_dirs = { "~/mods", "/opt/mods" },
      linger = "3s",
      spawn_timeout = 5000,
      call_timeout = 2000,
      log_level = "warn",
    }, "opts"))
    assert.is_true(config.validate({ linger = 0, log_level = vim.log.levels.DEBUG }, "opts"))
    assert.is_true(config.validate(nil, "opts"))
  end)

  it("names unknown options and suggests the closest", function()
    assert.equal('opts: unknown option "sockt" (did you mean "socket"?)', invalid({ sockt = "x" }))
    assert.matches('unknown option "zzz"$', invalid({ zzz = 1 }))
  end)

  it("explains wrong types", function()
    assert.matches(
      'modules_dirs must be a list of directories %(e%.g%. { "/x" }%), got a string',
      invalid({ modules_dirs = "/x" })
    )
    assert.matches(
      "modules_dirs%[2%] must be a non%-empty string",
      invalid({ modules_dirs = { "/a", 3 } })
    )
    assert.matches(
      'linger must be milliseconds or a duration such as "3s"',
      invalid({ linger = "soon" })
    )
    assert.matches(
      "spawn_timeout must be a positive whole number of milliseconds, got %-1",
      invalid({ spawn_timeout = -1 })
    )
    assert.matches(
      'log_level must be a vim.log.levels value or one of "trace"',
      invalid({ log_level = "loud" })
    )
    assert.matches("socket must be a non%-empty string", invalid({ socket = "" }))
    assert.matches("opts must be a table, got string", invalid("x"))
  end)

  it("setup raises on bad options and keeps the previous ones", function()
    norgopolis.setup({ call_timeout = 1234 })
    local ok, err = pcall(norgopolis.setup, { call_timout = 1 })
    assert.is_false(ok)
    assert.matches(
      'norgopolis.setup%(%): unknown option "call_timout" %(did you mean "call_timeout"%?%)',
      err
    )
    assert.equal(1234, config.get().call_timeout)
  end)

  it("reads vim.g.norgopolis, setup's options win", function()
    vim.g.norgopolis = { call_timeout = 111, spawn_timeout = 222 }
    norgopolis.setup({ call_timeout = 333 })
    local cfg = config.get()
    assert.equal(333, cfg.call_timeout)
    assert.equal(222, cfg.spawn_timeout)
    assert.equal("info", cfg.log_level)
  end)

  it("reports a bad vim.g.norgopolis at first use", function()
    vim.g.norgopolis = { linger = {} }
    local ok, err = pcall(config.get)
    assert.is_false(ok)
    assert.matches("^vim.g.norgopolis: linger must be", err)
  end)

  it("turns linger into the server's --linger", function()
    assert.equal("250ms", config.linger_arg(250))
    assert.equal("3s", config.linger_arg("3s"))
  end)

  it("log_level filters plugin messages", function()
    norgopolis.setup({ log_level = "error" })
    local shown = {}
    local real = vim.notify
    vim.notify = function(msg)
      table.insert(shown, msg)
    end
    require("norgopolis.core").notify("quiet", vim.log.levels.INFO)
    require("norgopolis.core").notify("loud", vim.log.levels.ERROR)
    vim.notify = real
    assert.same({ "loud" }, shown)
  end)
end)

describe("config: modules", function()
  after_each(function()
    norgopolis.setup({})
  end)

  it("accepts module tables by name", function()
    assert.is_true(config.validate({
      modules = {
        notes = { workspaces = { notes = "~/notes" }, depth = 2, ratio = 0.5, list = { 1, "a" } },
        ["other-mod_2"] = {},
        flags = { on = true, none = vim.NIL, empty = vim.empty_dict() },
      },
    }, "opts"))
    assert.is_true(config.validate({ modules = {} }, "opts"))
  end)

  it("names what is wrong and where", function()
    local cases = {
      { "x", "modules must be a table of module configurations by name" },
      { { { a = 1 } }, "modules must be a table of module configurations by name" },
      { { ["no/slash"] = {} }, '"no/slash" is not a module name' },
      { { [("x"):rep(65)] = {} }, "is not a module name" },
      { { notes = 3 }, "modules.notes must be a table of settings, got 3" },
      { { notes = { 1, 2 } }, "modules.notes must be a table of settings" },
      {
        { notes = { on_change = print } },
        "modules.notes.on_change is a function; use strings, numbers, booleans, lists and tables",
      },
      { { notes = { deep = { list = { 1, 0 / 0 } } } }, "modules.notes.deep.list%[2%] is nan" },
      {
        { notes = { t = { [1] = 1, a = 2 } } },
        "modules.notes.t has the key 1; keys must be strings",
      },
    }
    for _, c in ipairs(cases) do
      assert.matches(c[2], invalid({ modules = c[1] }), nil, vim.inspect(c[1]))
    end
  end)

  it("setup() raises the same errors", function()
    local ok, err = pcall(norgopolis.setup, { modules = { notes = { cb = print } } })
    assert.is_false(ok)
    assert.matches("^norgopolis.setup%(%): modules.notes.cb is a function", err)
  end)

  it("becomes one --module-config flag per module, in name order", function()
    assert.same({}, config.module_config_args(nil))
    local args = config.module_config_args({
      notes = { workspaces = { a = "/x" } },
      alpha = {},
    })
    assert.same({ "--module-config", "alpha={}", "--module-config" }, vim.list_slice(args, 1, 3))
    assert.equal("notes=", args[4]:sub(1, 6))
    assert.same({ workspaces = { a = "/x" } }, vim.json.decode(args[4]:sub(7)))
  end)
end)
