-- One modules-dirs rule: for the same environment and config.toml, the
-- server (`--check-config`), the CLI (`module list --json`) and Lua
-- (`paths.modules_dirs`) resolve the same dirs.
local helpers = require("helpers")
local paths = require("norgopolis.paths")

local cli = helpers.root .. "/target/debug/norgopolis"

---@param cmd string[]
---@return string stdout
local function run(cmd)
  local res = vim.system(cmd, { text = true }):wait(30000)
  assert(res.code == 0, table.concat(cmd, " ") .. ": " .. tostring(res.stderr))
  return res.stdout
end

---@param flags string[]
---@return string[]
local function server_dirs(flags)
  local cmd = { helpers.server, "--check-config" }
  for _, dir in ipairs(flags) do
    vim.list_extend(cmd, { "--modules-dir", dir })
  end
  local dirs = {}
  for dir in run(cmd):gmatch("modules dir: ([^\n]+)") do
    table.insert(dirs, dir)
  end
  return dirs
end

---@param flags string[]
---@return string[]
local function cli_dirs(flags)
  local cmd = { cli }
  for _, dir in ipairs(flags) do
    vim.list_extend(cmd, { "--modules-dir", dir })
  end
  vim.list_extend(cmd, { "module", "list", "--json" })
  return vim.json.decode(run(cmd)).dirs
end

---@param flags string[]
---@return string[]
local function lua_dirs(flags)
  local dirs = paths.modules_dirs({ modules_dirs = #flags > 0 and flags or nil })
  return dirs
end

describe("the modules dirs", function()
  local saved = {}
  local vars = { "NORGOPOLIS_MODULES_DIR", "NORGOPOLIS_CONFIG", "XDG_DATA_HOME" }
  local base, config

  before_each(function()
    for _, v in ipairs(vars) do
      saved[v] = vim.env[v]
    end
    base = helpers.tmp .. "/catalog-" .. vim.uv.hrtime()
    vim.fn.mkdir(base .. "/conf", "p")
    config = base .. "/conf/config.toml"
    vim.env.NORGOPOLIS_CONFIG = config
    vim.env.NORGOPOLIS_MODULES_DIR = nil
    vim.env.XDG_DATA_HOME = base .. "/data"
  end)

  after_each(function()
    for _, v in ipairs(vars) do
      vim.env[v] = saved[v]
    end
  end)

  --- Asserts the three agree, and on `want`.
  ---@param flags string[]
  ---@param want string[]
  local function agree(flags, want)
    assert.same(want, server_dirs(flags), "the server")
    assert.same(want, cli_dirs(flags), "the CLI")
    assert.same(want, lua_dirs(flags), "Lua")
  end

  it("with neither variable nor config: the default", function()
    agree({}, { base .. "/data/norgopolis/modules" })
  end)

  it("with the variable only", function()
    vim.env.NORGOPOLIS_MODULES_DIR = base .. "/env1:" .. base .. "/env2"
    agree({}, { base .. "/env1", base .. "/env2" })
  end)

  it("with config.toml only, relative entries from its dir", function()
    vim.fn.writefile({ 'modules_dirs = ["rel", "' .. base .. '/abs"]' }, config)
    agree({}, { base .. "/conf/rel", base .. "/abs" })
  end)

  it("with both: the variable wins", function()
    vim.fn.writefile({ 'modules_dirs = ["rel"]' }, config)
    vim.env.NORGOPOLIS_MODULES_DIR = base .. "/env1"
    agree({}, { base .. "/env1" })
  end)

  it("with flags (the `modules_dirs` option): they win over both", function()
    vim.fn.writefile({ 'modules_dirs = ["rel"]' }, config)
    vim.env.NORGOPOLIS_MODULES_DIR = base .. "/env1"
    agree({ base .. "/flag" }, { base .. "/flag" })
  end)
end)
