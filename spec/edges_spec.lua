-- The API's edges: bad options, bad bytes, errors at the caller's line, and
-- recovery after a first use that failed.
local helpers = require("helpers")
local norgopolis = require("norgopolis")

local this_file = "edges_spec%.lua:%d+: "

--- Runs a script in a fresh Neovim and returns its stdout lines.
---@param script string
---@param env? table
---@return string[]
local function fresh(script, env)
  local proc = helpers.spawn_nvim(script .. "\nvim.cmd('qa!')", { env = env }):wait(30000)
  assert.equal(0, proc.code, proc.stdout .. proc.stderr)
  return vim.split(vim.trim(proc.stdout), "\n")
end

describe("API edges", function()
  it("call_sync checks its options' types", function()
    local ok, err = pcall(norgopolis.call_sync, "echo", "echo", 1, 5)
    assert.is_false(ok)
    assert.matches(
      "norgopolis%.call_sync: opts must be a table { timeout = milliseconds }, got 5",
      err
    )
    ok, err = pcall(norgopolis.call_sync, "echo", "echo", 1, { timeout = "x" })
    assert.is_false(ok)
    assert.matches('opts%.timeout must be a positive whole number of milliseconds, got "x"', err)
    ok, err = pcall(norgopolis.call_sync, "echo", "echo", 1, { timeout = -1 })
    assert.is_false(ok)
    assert.matches("got %-1", err)
  end)

  it("errors about arguments point at the caller's line", function()
    local function fails(f)
      local ok, err = pcall(f)
      assert.is_false(ok)
      return err
    end
    assert.matches(
      this_file .. "norgopolis%.call_sync: opts must be",
      fails(function()
        norgopolis.call_sync("echo", "echo", 1, 5)
      end)
    )
    for _, name in ipairs({ "invoke", "call", "call_sync" }) do
      assert.matches(
        this_file .. "norgopolis%." .. name .. ": cannot send",
        fails(function()
          norgopolis[name]("echo", "echo", { f = print })
        end)
      )
    end
    assert.matches(
      this_file .. "norgopolis%.call: callback must be a function",
      fails(function()
        norgopolis.call("echo", "echo", 1, 42)
      end)
    )
    assert.matches(
      this_file .. "norgopolis%.status: callback must be a function",
      fails(function()
        norgopolis.status(42)
      end)
    )
    assert.matches(
      this_file .. "norgopolis: module must be a non%-empty string",
      fails(function()
        norgopolis.call_sync("", "echo")
      end)
    )
  end)

  it("decode raises on bytes that are not one MessagePack value", function()
    for _, bytes in ipairs({ "", "\193", "\145\193", "\146\001", "\001\002" }) do
      local ok, err = pcall(function()
        norgopolis.decode(bytes)
      end)
      assert.is_false(ok, vim.inspect(bytes))
      assert.matches(this_file .. "norgopolis%.decode: ", err)
    end
    assert.matches("0xc1", select(2, pcall(norgopolis.decode, "\145\193")))
    assert.matches("no bytes", select(2, pcall(norgopolis.decode, "")))
    assert.matches("must be a string", select(2, pcall(norgopolis.decode, 5)))
    -- and still decodes what is valid
    assert.same({ 1, "a" }, norgopolis.decode(norgopolis.encode({ 1, "a" })))
    assert.is_nil(norgopolis.decode("\192"))
  end)

  it("a missing native library is one short error", function()
    -- The Lua files without native.so, and no rock on package.cpath.
    local copy = helpers.tmp .. "/no-native-" .. vim.uv.hrtime()
    vim.fn.mkdir(copy .. "/lua/norgopolis", "p")
    for name, kind in vim.fs.dir(helpers.root .. "/lua/norgopolis") do
      if kind == "file" and name:match("%.lua$") then
        vim.uv.fs_copyfile(
          helpers.root .. "/lua/norgopolis/" .. name,
          copy .. "/lua/norgopolis/" .. name
        )
      end
    end
    local lines = fresh(([[
vim.opt.rtp:remove(%q)
vim.opt.rtp:prepend(%q)
package.cpath = ""
local ok, err = pcall(require("norgopolis").call, "echo", "echo", 1, function() end)
io.stdout:write(tostring(ok), "\n", (tostring(err):gsub("\n", "\\n")), "\n")
]]):format(helpers.root, copy))
    assert.equal("false", lines[1])
    assert.matches("the native library is not built", lines[2])
    assert.matches("run `:Norgopolis build`", lines[2])
    assert.not_matches("\\n", lines[2])
    assert.not_matches("no file", lines[2])
    local _, builds = lines[2]:gsub("run `:Norgopolis build`", "")
    assert.equal(1, builds)
  end)
end)

describe("recovery after a failed first use", function()
  it("a bad vim.g.norgopolis fails the call clearly; fixed, the next call works", function()
    local lines = fresh(
      [[
vim.g.norgopolis = { linger = {} }
local np = require("norgopolis")
local ok, err = pcall(np.call_sync, "echo", "echo", "first", { timeout = 10000 })
io.stdout:write(tostring(ok), "\n", tostring(err), "\n")
vim.g.norgopolis = { linger = 100 }
local values, e = np.call_sync("echo", "echo", "second", { timeout = 10000 })
io.stdout:write(vim.inspect(values), " ", vim.inspect(e), "\n")
]],
      { NORGOPOLIS_SERVER = "" }
    ) -- the server is found beside the plugin, by the Lua side
    assert.equal("false", lines[1])
    assert.matches("vim%.g%.norgopolis: linger must be", lines[2])
    assert.not_matches("server binary", lines[2])
    assert.equal('{ "second" } nil', lines[3])
  end)

  it("a first call from a fast callback errors clearly and leaves nothing broken", function()
    local lines = fresh([[
local np = require("norgopolis")
local result
local timer = vim.uv.new_timer()
timer:start(1, 0, function()
  local ok, err = pcall(np.call, "echo", "echo", "fast", function() end)
  result = tostring(ok) .. "\n" .. tostring(err)
end)
vim.wait(5000, function() return result ~= nil end, 5)
timer:close()
io.stdout:write(result, "\n")
local values, e = np.call_sync("echo", "echo", "after", { timeout = 10000 })
io.stdout:write(vim.inspect(values), " ", vim.inspect(e), "\n")
]])
    assert.equal("false", lines[1])
    assert.matches("fast %(luv%) callback: wrap it in vim%.schedule%(%)", lines[2])
    assert.equal('{ "after" } nil', lines[3])
  end)

  it("calls from a fast callback work once configured", function()
    local done, err, values = false, nil, nil
    norgopolis.call_sync("echo", "echo", 1, { timeout = 15000 })
    local timer = vim.uv.new_timer()
    timer:start(1, 0, function()
      norgopolis.call("echo", "echo", "from luv", function(e, v)
        done, err, values = true, e, v
      end)
    end)
    helpers.wait(15000, function()
      return done
    end, "the call from a luv callback")
    timer:close()
    assert.is_nil(err)
    assert.same({ "from luv" }, values)
  end)
end)
