local helpers = require("helpers")
local norgopolis = require("norgopolis")

local function complete(line)
  return vim.fn.getcompletion(line, "cmdline")
end

local checkhealth = helpers.checkhealth

--- A module folder running the echo binary with `functions` as its
--- manifest's functions (TOML text).
---@param name string
---@param functions string
local function module_folder(name, functions)
  local dir = helpers.modules .. "/" .. name
  vim.fn.mkdir(dir, "p")
  vim.uv.fs_symlink(helpers.echo, dir .. "/" .. name)
  local lines = vim.split("functions = [\n" .. functions .. "\n]", "\n")
  vim.fn.writefile(lines, dir .. "/module.toml")
end

describe("signatures", function()
  setup(function()
    module_folder(
      "typed",
      [[
  { name = "echo", args = "{ path: string, limit?: integer }", result = "[string]" },
  { name = "sleep", args = "integer" },
  "pid",
]]
    )
  end)

  teardown(function()
    -- Other spec files share the modules dir and the server.
    helpers.await(norgopolis.unload, "typed")
    vim.fn.delete(helpers.modules .. "/typed", "rf")
    vim.fn.delete(helpers.modules .. "/badsig", "rf")
  end)

  it("completion lists a function's declared arguments after its name", function()
    assert.same({ "echo", "pid", "sleep" }, complete("Norgopolis call typed "))
    assert.same({ "{ path: string, limit?: integer }" }, complete("Norgopolis call typed echo "))
    assert.same({ "integer" }, complete("Norgopolis call typed sleep "))
    assert.same({}, complete("Norgopolis call typed pid "), "no signature, no hint")
    assert.same({}, complete("Norgopolis call typed echo {"), "typing is not interrupted")
    local complete_mod = require("norgopolis.complete")
    assert.same(
      { args = "{ path: string, limit?: integer }", result = "[string]" },
      complete_mod.signature("typed", "echo")
    )
    assert.equal(
      "({ path: string, limit?: integer }) -> [string]",
      complete_mod.format_signature(complete_mod.signature("typed", "echo"))
    )
  end)

  it("the server's module list carries them, and refuses calls that do not fit", function()
    local err, reply = helpers.await(norgopolis.modules)
    assert.is_nil(err)
    local typed
    for _, m in ipairs(reply.modules) do
      if m.name == "typed" then
        typed = m
      end
    end
    assert.same({ "echo", "sleep", "pid" }, typed.functions)
    assert.same({ "{ path: string, limit?: integer }", "integer", "" }, typed.function_args)
    assert.same({ "[string]", "", "" }, typed.function_results)

    local values, call_err = norgopolis.call_sync("typed", "echo", { path = "a", limit = "3" })
    assert.is_nil(values)
    assert.equal("InvalidArgument", call_err.code)
    assert.matches("^args%.limit: expected integer, got string", call_err.message)
    values = assert(norgopolis.call_sync("typed", "echo", { path = "a", limit = 3 }))
    assert.same({ { path = "a", limit = 3 } }, values)
  end)

  it(":checkhealth lists them per module, and reports a bad one", function()
    local out = checkhealth()
    assert.matches(vim.pesc("typed.echo ({ path: string, limit?: integer }) -> [string]"), out)
    assert.matches(vim.pesc("typed.sleep (integer)"), out)
    assert.not_matches("typed%.pid", out)
    assert.not_matches("ERROR", out)

    module_folder("badsig", [[  { name = "query", args = "[strng]" },]])
    out = checkhealth()
    assert.matches(
      'ERROR .*badsig/module%.toml: key `functions`: function "query", `args`: column 2: unknown type "strng"',
      out
    )
  end)
end)
