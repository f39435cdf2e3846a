-- Events through the real server: the autocmd's data, on() handlers, their
-- order, exact topic matching, and the server's own lifecycle topics.
local norgopolis = require("norgopolis")
local helpers = require("helpers")

--- Records NorgopolisEvent autocmds (of one topic, if given) until `stop()`.
---@param topic? string
local function record_autocmds(topic)
  local seen = {}
  local id = vim.api.nvim_create_autocmd("User", {
    pattern = "NorgopolisEvent",
    callback = function(ev)
      if topic == nil or ev.data.topic == topic then
        table.insert(seen, ev.data)
      end
    end,
  })
  return seen, function()
    pcall(vim.api.nvim_del_autocmd, id)
  end
end

local function publish(module, topic, payload)
  local err, delivered = helpers.await(norgopolis.publish, module, topic, payload)
  assert.is_nil(err)
  assert.is_true(delivered >= 1)
end

--- Publishes a marker and waits for it: events are delivered in order, so
--- anything published before it has been dispatched by then.
local function flush()
  local marker = "flush-" .. vim.uv.hrtime()
  local got = false
  local off = norgopolis.on(marker, function()
    got = true
  end)
  publish("spec", marker, nil)
  helpers.wait(5000, function()
    return got
  end, "the marker event")
  off()
end

describe("events", function()
  before_each(function()
    assert.is_nil((helpers.await(norgopolis.attach)))
  end)

  it("reach User NorgopolisEvent with data = { module, topic, payload, seq }", function()
    local seen, stop = record_autocmds("saved")
    publish("notes", "saved", { file = "a.norg", lines = { 1, 2 } })
    helpers.wait(5000, function()
      return #seen >= 1
    end, "the event")
    stop()
    local data = seen[1]
    assert.same({ "module", "payload", "seq", "topic" }, vim.fn.sort(vim.tbl_keys(data)))
    assert.equal("notes", data.module)
    assert.equal("saved", data.topic)
    assert.same({ file = "a.norg", lines = { 1, 2 } }, data.payload)
    assert.is_true(data.seq > 0)
  end)

  it(
    "decode the payload by the value table: nil stays nil, 64-bit integers exact in on()",
    function()
      local seen, stop = record_autocmds("values")
      local got = {}
      local off = norgopolis.on("values", function(ev)
        table.insert(got, ev)
      end)
      publish("spec", "values", nil)
      publish("spec", "values", { n = vim.NIL, empty = vim.empty_dict(), list = {} })
      publish("spec", "values", 9007199254740993LL)
      helpers.wait(5000, function()
        return #got == 3 and #seen == 3
      end, "three events")
      off()
      stop()
      assert.is_nil(got[1].payload)
      assert.is_nil(seen[1].payload)
      assert.is_nil(got[1].payload_error)
      assert.equal(vim.NIL, got[2].payload.n)
      assert.equal(vim._empty_dict_mt, getmetatable(got[2].payload.empty))
      assert.same({}, got[2].payload.list)
      assert.equal(vim._empty_dict_mt, getmetatable(seen[2].payload.empty))
      assert.equal("9007199254740993LL", tostring(got[3].payload))
      -- The autocmd cannot carry cdata; it still fires and says why.
      assert.is_nil(seen[3].payload)
      assert.matches("on%(%)", seen[3].payload_error)
      assert.equal(got[3].seq, seen[3].seq)
    end
  )

  it("published by another Neovim reach an on() handler and the autocmd, in order", function()
    local order = {}
    local seen, stop = record_autocmds("tick")
    local off = norgopolis.on("tick", function(ev)
      table.insert(order, "on " .. ev.payload)
    end)
    local id = vim.api.nvim_create_autocmd("User", {
      pattern = "NorgopolisEvent",
      callback = function(ev)
        if ev.data.topic == "tick" then
          table.insert(order, "autocmd " .. ev.data.payload)
        end
      end,
    })
    -- The child publishes one at a time (each publish waits for the last),
    -- so the server sees them in this order.
    local child = helpers.spawn_nvim([[
      local n = require("norgopolis")
      for i = 1, 5 do
        local done, failed = false, nil
        n.publish("other-nvim", "tick", i, function(err) done, failed = true, err end)
        vim.wait(15000, function() return done end)
        if not done or failed then
          io.stdout:write("publish failed: " .. vim.inspect(failed) .. "\n")
          os.exit(3)
        end
      end
      io.stdout:write("published\n")
      vim.cmd("qa!")
    ]])
    local res = child:wait(30000)
    assert.equal(0, res.code, res.stdout .. res.stderr)
    helpers.wait(5000, function()
      return #order == 10
    end, "ten deliveries (got " .. vim.inspect(order) .. ")")
    off()
    stop()
    vim.api.nvim_del_autocmd(id)
    assert.same({
      "on 1",
      "autocmd 1",
      "on 2",
      "autocmd 2",
      "on 3",
      "autocmd 3",
      "on 4",
      "autocmd 4",
      "on 5",
      "autocmd 5",
    }, order)
    local ticks = seen
    assert.equal(5, #ticks)
    for i, d in ipairs(ticks) do
      assert.equal("other-nvim", d.module)
      assert.equal(i, d.payload)
      if i > 1 then
        assert.is_true(d.seq > ticks[i - 1].seq)
      end
    end
  end)

  it("published by a module (echo.publish through the SDK) reach on() and the autocmd", function()
    local seen, stop = record_autocmds("from.module")
    local got
    local off = norgopolis.on("from.module", function(ev)
      got = ev
    end, { module = "echo" })
    local v, err = norgopolis.call_sync(
      "echo",
      "publish",
      { topic = "from.module", data = { x = 1 } },
      { timeout = 15000 }
    )
    assert.is_nil(err)
    assert.is_true(v[1] >= 1)
    helpers.wait(5000, function()
      return got and #seen == 1
    end, "the module's event")
    off()
    stop()
    assert.equal("echo", got.module)
    assert.same({ x = 1 }, got.payload)
    assert.same(
      { module = "echo", topic = "from.module", payload = { x = 1 }, seq = got.seq },
      seen[1]
    )
  end)

  it("on() matches the topic exactly, and the module when asked", function()
    local any, from_notes = {}, {}
    local off1 = norgopolis.on("note.saved", function(ev)
      table.insert(any, ev.module .. ":" .. ev.topic)
    end)
    local off2 = norgopolis.on("note.saved", function(ev)
      table.insert(from_notes, ev.module)
    end, { module = "notes" })
    publish("notes", "note", 1)
    publish("notes", "note.saved.later", 2)
    publish("notes", "Note.Saved", 3)
    publish("notes", "note.saved", 4)
    publish("journal", "note.saved", 5)
    flush()
    off1()
    off2()
    assert.same({ "notes:note.saved", "journal:note.saved" }, any)
    assert.same({ "notes" }, from_notes)
  end)

  it("unsubscribing stops delivery, twice is harmless, and works inside a handler", function()
    local a, b = 0, 0
    local off_a
    off_a = norgopolis.on("unsub", function()
      a = a + 1
      off_a()
    end)
    local off_b = norgopolis.on("unsub", function()
      b = b + 1
    end)
    publish("spec", "unsub", nil)
    publish("spec", "unsub", nil)
    flush()
    assert.equal(1, a)
    assert.equal(2, b)
    off_b()
    off_b()
    off_a()
    publish("spec", "unsub", nil)
    flush()
    assert.equal(1, a)
    assert.equal(2, b)
  end)

  it("a failing handler is reported and the others still run", function()
    local ran = false
    local off1 = norgopolis.on("boom", function()
      error("handler exploded")
    end)
    local off2 = norgopolis.on("boom", function()
      ran = true
    end)
    local msgs = helpers.capture_notify(function()
      publish("spec", "boom", nil)
    end, function()
      return ran
    end)
    off1()
    off2()
    assert.matches('error in an event handler for "boom".*handler exploded', msgs[1].msg)
    assert.equal(vim.log.levels.ERROR, msgs[1].level)
  end)

  it("on() checks its arguments", function()
    assert.has_error(function()
      norgopolis.on("", function() end)
    end)
    assert.has_error(function()
      norgopolis.on("t", "not a function")
    end)
    assert.has_error(function()
      norgopolis.on("t", function() end, { module = 3 })
    end)
  end)

  it("on() attaches so that events flow", function()
    helpers.await(norgopolis.detach)
    assert.is_nil(require("norgopolis.core").native().session())
    local got = false
    local off = norgopolis.on("after-attach", function()
      got = true
    end)
    helpers.wait(15000, function()
      return require("norgopolis.core").native().session() ~= nil
    end, "the attach")
    publish("spec", "after-attach", nil)
    helpers.wait(5000, function()
      return got
    end, "the event")
    off()
  end)
end)

describe("server lifecycle events", function()
  before_each(function()
    assert.is_nil((helpers.await(norgopolis.attach)))
  end)

  it("module.loaded and module.exited reach on() handlers and the autocmd", function()
    helpers.await(norgopolis.unload, "echo")
    local seen, stop = record_autocmds()
    -- Events of earlier echo instances (a load by an earlier test, the unload
    -- above) may still be on their way, so each handler keeps every event and
    -- the test waits for the ones of the instance it started itself.
    local loads, exits = {}, {}
    local off1 = norgopolis.on("module.loaded", function(ev)
      if ev.payload.name == "echo" then
        loads[#loads + 1] = ev
      end
    end, { module = "norgopolis" })
    local off2 = norgopolis.on("module.exited", function(ev)
      if ev.payload.name == "echo" then
        exits[#exits + 1] = ev
      end
    end, { module = "norgopolis" })
    local function of_pid(list, pid)
      for _, ev in ipairs(list) do
        if ev.payload.pid == pid then
          return ev
        end
      end
    end
    local err, reply = helpers.await(norgopolis.load, "echo")
    assert.is_nil(err)
    local pid = reply.module.pid
    local loaded
    helpers.wait(5000, function()
      loaded = of_pid(loads, pid)
      return loaded
    end, "module.loaded of pid " .. tostring(pid))
    assert.equal("load", loaded.payload.cause)
    err = helpers.await(norgopolis.unload, "echo")
    assert.is_nil(err)
    local exited
    helpers.wait(5000, function()
      exited = of_pid(exits, pid)
      return exited
    end, "module.exited of pid " .. tostring(pid))
    assert.is_true(exited.payload.requested)
    assert.is_true(exited.seq > loaded.seq)
    off1()
    off2()
    stop()
    local topics = vim.tbl_map(function(d)
      return d.module .. " " .. d.topic
    end, seen)
    assert.is_true(vim.tbl_contains(topics, "norgopolis module.loaded"), vim.inspect(topics))
    assert.is_true(vim.tbl_contains(topics, "norgopolis module.exited"), vim.inspect(topics))
  end)

  it("module.crashed names the module and its exit status", function()
    local crashed
    local off = norgopolis.on("module.crashed", function(ev)
      crashed = ev
    end, { module = "norgopolis" })
    local _, err = norgopolis.call_sync("echo", "crash", 7, { timeout = 15000 })
    assert.equal("Unavailable", err.code)
    helpers.wait(5000, function()
      return crashed
    end, "module.crashed")
    off()
    assert.equal("echo", crashed.payload.name)
    assert.matches("7", tostring(crashed.payload.status))
  end)

  it("clients cannot publish as the server", function()
    local err = helpers.await(norgopolis.publish, "norgopolis", "module.loaded", { name = "fake" })
    assert.is_not_nil(err)
    assert.matches("norgopolis", err.message)
  end)

  it("server.shutdown reaches Neovim before the session ends", function()
    local order = {}
    local off = norgopolis.on("server.shutdown", function(ev)
      table.insert(order, "shutdown: " .. tostring(ev.payload.reason))
    end, { module = "norgopolis" })
    local id = vim.api.nvim_create_autocmd("User", {
      pattern = "NorgopolisSession",
      callback = function(ev)
        if ev.data.type == "detached" then
          table.insert(order, "detached")
        end
      end,
    })
    assert.is_nil((helpers.await(norgopolis.shutdown)))
    helpers.wait(10000, function()
      return #order >= 2
    end, "the shutdown event and the detach")
    off()
    vim.api.nvim_del_autocmd(id)
    assert.matches("^shutdown: .*requested from Neovim", order[1])
    assert.equal("detached", order[2])
  end)
end)
