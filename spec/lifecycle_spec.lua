-- Several Neovims sharing one server; Neovim exiting or dying mid-call.
local norgopolis = require("norgopolis")
local helpers = require("helpers")

-- A child Neovim: attaches, prints "pid <server pid>", then obeys lines on
-- stdin: "call" (prints "echo <value>"), "stream" (starts a long stream and
-- prints "streaming" at its first item), "quit" (:qa! with calls in flight).
local CHILD = [[
local n = require("norgopolis")
local native = require("norgopolis.core").native()
local v, err = n.call_sync("echo", "pid", nil, { timeout = 15000 })
if err then
  io.stdout:write("error " .. err.code .. " " .. err.message .. "\n")
  io.stdout:flush()
  os.exit(3)
end
io.stdout:write("pid " .. native.session().server_pid .. "\n")
io.stdout:flush()
while true do
  local line = io.read("*l")
  if line == nil or line == "quit" then
    break
  elseif line == "call" then
    local r, e = n.call_sync("echo", "echo", "again", { timeout = 15000 })
    io.stdout:write((e and ("error " .. e.code) or ("echo " .. r[1])) .. "\n")
    io.stdout:flush()
  elseif line == "stream" then
    local started = false
    n.invoke("echo", "count", { n = 100000, delay_ms = 50 }, {
      on_value = function() started = true end,
    })
    n.call("echo", "sleep", 60000, function() end)
    vim.wait(15000, function() return started end)
    io.stdout:write("streaming\n")
    io.stdout:flush()
  end
end
vim.cmd("qa!")
]]

--- A running child with its output lines.
local function child()
  local c = { lines = {} }
  c.proc = helpers.spawn_nvim(CHILD, {
    stdin = true,
    stdout = function(_, data)
      if data then
        for line in data:gmatch("[^\n]+") do
          table.insert(c.lines, line)
        end
      end
    end,
  })
  function c.expect(pattern)
    local found
    helpers.wait(20000, function()
      for _, l in ipairs(c.lines) do
        found = found or l:match(pattern)
      end
      return found
    end, "child output matching " .. pattern .. " (got " .. vim.inspect(c.lines) .. ")")
    c.lines = {}
    return found
  end
  return c
end

local function status()
  local err, st = helpers.await(norgopolis.status)
  assert.is_nil(err)
  return st
end

--- Waits until this Neovim is the server's only client and nothing runs
--- (children of earlier tests may still be leaving).
local function only_us()
  helpers.wait(10000, function()
    local st = status()
    return st.sessions == 1 and st.calls_in_flight == 0
  end, "earlier clients to leave")
  return status()
end

describe("lifecycle", function()
  it("two Neovims share one server started by the first; it survives the first quitting", function()
    -- No server and no lease of ours: the first child must spawn one.
    local err = helpers.await(norgopolis.shutdown)
    assert.is_true(err == nil or err.code == "Unavailable")
    helpers.await(norgopolis.detach)

    local a = child()
    local pid_a = tonumber(a.expect("^pid (%d+)$"))
    local b = child()
    local pid_b = tonumber(b.expect("^pid (%d+)$"))
    assert.equal(pid_a, pid_b)

    a.proc:write("quit\n")
    local res = a.proc:wait(10000)
    assert.equal(0, res.code)
    assert.is_true(helpers.alive(pid_a), "the server died with the Neovim that started it")

    b.proc:write("call\n")
    assert.equal("echo again", b.expect("^echo .*$"))
    b.proc:write("quit\n")
    assert.equal(0, b.proc:wait(10000).code)
  end)

  it("quitting with calls in flight exits promptly, cleanly, and ends the lease", function()
    local before = only_us()
    local c = child()
    assert.equal(before.pid, tonumber(c.expect("^pid (%d+)$")))
    helpers.wait(5000, function()
      return status().sessions == before.sessions + 1
    end, "the child's session")
    c.proc:write("stream\n")
    c.expect("^streaming$")
    c.proc:write("quit\n")
    -- a 60 s sleep and a long stream are in flight: waiting on them would time out
    local res = c.proc:wait(10000)
    assert.equal(0, res.code, res.stderr)
    helpers.wait(5000, function()
      local st = status()
      return st.sessions == before.sessions and st.calls_in_flight == 0
    end, "the server to drop the child's session and calls")
  end)

  it("a Neovim killed mid-call leaves the server healthy", function()
    local before = only_us()
    local c = child()
    c.expect("^pid %d+$")
    c.proc:write("stream\n")
    c.expect("^streaming$")
    c.proc:kill(9)
    c.proc:wait(10000)
    helpers.wait(10000, function()
      local st = status()
      return st.sessions == before.sessions and st.calls_in_flight == 0
    end, "the server to notice the killed Neovim")
    local v, err = norgopolis.call_sync("echo", "echo", "still here", { timeout = 15000 })
    assert.is_nil(err)
    assert.same({ "still here" }, v)
    assert.equal(before.pid, status().pid)
  end)

  it("after the server is killed, the next call attaches to a new one", function()
    local old = only_us().pid
    local detached = false
    local id = vim.api.nvim_create_autocmd("User", {
      pattern = "NorgopolisSession",
      callback = function(ev)
        detached = detached or ev.data.type == "detached"
      end,
    })
    vim.uv.kill(old, 9)
    helpers.wait(10000, function()
      return detached
    end, "the lost session to be noticed")
    vim.api.nvim_del_autocmd(id)
    local v, err = norgopolis.call_sync("echo", "echo", "back", { timeout = 15000 })
    assert.is_nil(err)
    assert.same({ "back" }, v)
    local new = status().pid
    assert.are_not.equal(old, new)
  end)
end)
