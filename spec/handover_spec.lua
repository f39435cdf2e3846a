-- The upgrade handover seen from the plugin: a Neovim of an older
-- norgopolis (NORGOPOLIS_VERSION_OVERRIDE, honoured by debug builds) on its
-- server; a newer client arrives; the Neovim's next call goes to the newer
-- server without anything done by hand, and its event subscriptions carry on.
local helpers = require("helpers")

local OLD = "0.0.1"

-- The older Neovim: attaches, subscribes, prints "server <pid> <version>";
-- then on "call" prints "call <server pid> <server version>" and on
-- "publish" publishes spec/ping (its own handler prints "ping <n>").
local CHILD = [[
local n = require("norgopolis")
local native = require("norgopolis.core").native()
local function say(line)
  io.stdout:write(line .. "\n")
  io.stdout:flush()
end
n.on("ping", function(e) say("ping " .. tostring(e.payload)) end, { attach = false })
n.on("server.retiring", function(e) say("retiring " .. e.payload.successor) end, { attach = false })
local function call()
  local _, err = n.call_sync("echo", "pid", nil, { timeout = 30000 })
  if err then
    say("error " .. err.code .. " " .. err.message)
    return
  end
  local s = native.session()
  say("call " .. s.server_pid .. " " .. s.server_version)
end
call()
local pings, seen = 0, 0
n.on("ping", function() seen = seen + 1 end, { attach = false })
while true do
  local line = io.read("*l")
  if line == nil or line == "quit" then
    break
  elseif line == "call" then
    call()
  elseif line == "publish" then
    pings = pings + 1
    n.publish("spec", "ping", pings, function(err)
      if err then say("error " .. err.code .. " " .. err.message) end
    end)
    -- Let the event come back before reading the next line.
    vim.wait(10000, function() return seen == pings end, 10)
  end
end
vim.cmd("qa!")
]]

describe("upgrade handover", function()
  local socket = helpers.tmp .. "/sock-handover/np.sock"

  before_each(function()
    vim.fn.mkdir(vim.fs.dirname(socket), "p", "0o700")
    vim.uv.fs_chmod(vim.fs.dirname(socket), tonumber("700", 8))
  end)

  it("moves an older Neovim to the newer server on its next call", function()
    local lines = {}
    local proc = helpers.spawn_nvim(CHILD, {
      stdin = true,
      env = { NORGOPOLIS_SOCKET = socket, NORGOPOLIS_VERSION_OVERRIDE = OLD },
      stdout = function(_, data)
        for line in (data or ""):gmatch("[^\n]+") do
          table.insert(lines, line)
        end
      end,
      stderr = function(_, data)
        for line in (data or ""):gmatch("[^\n]+") do
          table.insert(lines, "stderr: " .. line)
        end
      end,
    })
    local function expect(pattern)
      local found
      helpers.wait(30000, function()
        for i, l in ipairs(lines) do
          found = l:match(pattern) and { l:match(pattern) }
          if found then
            table.remove(lines, i)
            return true
          end
        end
      end, "child output matching " .. pattern .. " (got " .. vim.inspect(lines) .. ")")
      return unpack(found)
    end

    local old_pid, old_version = expect("^call (%d+) (%S+)")
    assert.are.equal(OLD, old_version)

    -- A newer client (this build's version) that may start servers.
    local cli = helpers.root .. "/target/debug/norgopolis"
    local done = vim
      .system({ cli, "status", "--json" }, {
        text = true,
        env = { NORGOPOLIS_SOCKET = socket, NORGOPOLIS_VERSION_OVERRIDE = "" },
      })
      :wait(60000)
    assert.are.equal(0, done.code, done.stderr)
    local st = vim.json.decode(done.stdout)
    local new_pid = tostring(st.pid)
    assert.are_not.equal(old_pid, new_pid)
    assert.are.equal(require("norgopolis").version(), st.version)
    helpers.wait(30000, function()
      return not helpers.alive(tonumber(old_pid))
    end, "the old server to exit")

    proc:write("call\n")
    local pid, version = expect("^call (%d+) (%S+)")
    assert.are.equal(new_pid, pid)
    assert.are.equal(st.version, version)
    -- Delivered while the child waited for its call (it blocks on stdin
    -- otherwise).
    assert.are.equal(st.version, expect("^retiring (%S+)"))

    proc:write("publish\n")
    assert.are.equal("1", expect("^ping (%S+)"))
    proc:write("quit\n")
    proc:wait(20000)
    local stop = vim
      .system({ cli, "shutdown" }, { env = { NORGOPOLIS_SOCKET = socket } })
      :wait(20000)
    assert.are.equal(0, stop.code)
  end)
end)
