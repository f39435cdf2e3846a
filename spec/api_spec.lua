-- The public Lua API against the real server and echo module.
local norgopolis = require("norgopolis")
local helpers = require("helpers")

local function call(fn, args, timeout)
  return norgopolis.call_sync("echo", fn, args, { timeout = timeout or 15000 })
end

describe("norgopolis API", function()
  it("attaches on the first call, spawning the server", function()
    local err, session = helpers.await(norgopolis.attach)
    assert.is_nil(err)
    assert.is_true(session.server_pid > 0)
    assert.equal(helpers.socket, session.socket)
    assert.is_true(helpers.alive(session.server_pid))
    -- Our server speaks the lean client transport, so calls use it.
    assert.equal("lean", session.transport)
  end)

  it("invoke streams items in order as they arrive", function()
    local items, done, err = {}, false, nil
    local first_at, done_at
    norgopolis.invoke("echo", "count", { n = 5, delay_ms = 50 }, {
      on_value = function(v)
        table.insert(items, v)
        first_at = first_at or vim.uv.hrtime()
      end,
      on_done = function(e)
        err, done, done_at = e, true, vim.uv.hrtime()
      end,
    })
    helpers.wait(15000, function()
      return done
    end, "count")
    assert.is_nil(err)
    assert.same({ 0, 1, 2, 3, 4 }, items)
    -- the first item arrived before the stream ended (no buffering)
    assert.is_true(first_at < done_at)
  end)

  it("on_value sees items before on_done, while the stream is running", function()
    local seen_before_done = nil
    local done = false
    local h = norgopolis.invoke("echo", "count", { n = 3, delay_ms = 200 }, {
      on_value = function()
        seen_before_done = seen_before_done or not done
      end,
      on_done = function()
        done = true
      end,
    })
    helpers.wait(15000, function()
      return seen_before_done ~= nil
    end, "a first item")
    assert.is_true(h:is_running())
    helpers.wait(15000, function()
      return done
    end, "the end")
    assert.is_false(h:is_running())
  end)

  it("call collects values; call_sync returns them", function()
    local err, values = helpers.await(norgopolis.call, "echo", "count", 3)
    assert.is_nil(err)
    assert.same({ 0, 1, 2 }, values)
    assert.same({ "hi" }, call("echo", "hi"))
    local v, e = call("echo", nil)
    assert.is_nil(e)
    assert.same({ vim.NIL }, v)
  end)

  it("cancel stops a long stream and the module call", function()
    local items, err, done = {}, nil, false
    local h = norgopolis.invoke("echo", "count", { n = 100000, delay_ms = 20 }, {
      on_value = function(v)
        table.insert(items, v)
      end,
      on_done = function(e)
        err, done = e, true
      end,
    })
    helpers.wait(15000, function()
      return #items >= 3
    end, "three items")
    h:cancel()
    helpers.wait(15000, function()
      return done
    end, "on_done after cancel")
    assert.equal("Cancelled", err.code)
    local n = #items
    -- the server no longer runs the call
    helpers.wait(5000, function()
      local e, st = helpers.await(norgopolis.status)
      assert.is_nil(e)
      return st.calls_in_flight == 0
    end, "the server to drop the cancelled call")
    assert.equal(n, #items)
  end)

  it("errors are tables with the module's code and message", function()
    local v, err = call("fail", { code = "NotFound", message = "no such note" })
    assert.is_nil(v)
    assert.same({ code = "NotFound", message = "no such note" }, err)
    _, err = call("fail", { code = "PermissionDenied" })
    assert.equal("PermissionDenied", err.code)
    v, err = norgopolis.call_sync("no_such_module", "x", nil, { timeout = 15000 })
    assert.equal("NotFound", err.code)
    assert.matches("no_such_module", err.message)
    _, err = norgopolis.call_sync("bad/name", "x", nil, { timeout = 15000 })
    assert.equal("InvalidArgument", err.code)
    _, err = call("no_such_function")
    assert.equal("NotFound", err.code)
  end)

  it("a module crash fails the call with Unavailable; the next call works", function()
    local _, err = call("crash", 7)
    assert.equal("Unavailable", err.code)
    assert.same({ 42 }, call("echo", 42))
  end)

  it("call_sync times out with DeadlineExceeded and cancels", function()
    local v, err = call("sleep", 5000, 100)
    assert.is_nil(v)
    assert.equal("DeadlineExceeded", err.code)
  end)

  it("unsendable arguments raise at the call site", function()
    local ok, err = pcall(norgopolis.invoke, "echo", "echo", { f = print })
    assert.is_false(ok)
    assert.matches("cannot send a function %(args%.f%)", err)
    ok, err = pcall(norgopolis.invoke, 42, "echo")
    assert.is_false(ok)
    assert.matches("module must be a non%-empty string", err)
  end)

  it("a 500 ms sleep does not block the main loop", function()
    local ticks = 0
    local timer = vim.uv.new_timer()
    timer:start(
      0,
      10,
      vim.schedule_wrap(function()
        ticks = ticks + 1
      end)
    )
    local done = false
    norgopolis.call("echo", "sleep", 500, function(err, values)
      assert.is_nil(err)
      assert.same({ 500 }, values)
      done = true
    end)
    local ticks_at_start = ticks
    helpers.wait(15000, function()
      return done
    end, "sleep")
    timer:stop()
    timer:close()
    assert.is_true(
      ticks - ticks_at_start >= 10,
      "timer fired " .. (ticks - ticks_at_start) .. " times"
    )
  end)

  it("status, modules, load and unload", function()
    local err, reply = helpers.await(norgopolis.load, "echo")
    assert.is_nil(err)
    assert.equal("echo", reply.module.name)
    assert.is_true(reply.module.pid > 0)
    local st
    err, st = helpers.await(norgopolis.status)
    assert.is_nil(err)
    assert.is_true(st.pid > 0)
    assert.is_true(st.sessions >= 1)
    local names = vim.tbl_map(function(m)
      return m.name
    end, st.modules)
    assert.is_true(vim.tbl_contains(names, "echo"))
    local list
    err, list = helpers.await(norgopolis.modules)
    assert.is_nil(err)
    assert.equal("echo", list.modules[1].name)
    assert.is_true(list.modules[1].loaded)
    local was
    err, was = helpers.await(norgopolis.unload, "echo")
    assert.is_nil(err)
    assert.is_true(was)
    err, was = helpers.await(norgopolis.unload, "echo")
    assert.is_false(was)
    err = helpers.await(norgopolis.load, "nope")
    assert.equal("NotFound", err.code)
  end)
end)

describe("events", function()
  it("published events arrive as User NorgopolisEvent autocmds", function()
    local got
    local id = vim.api.nvim_create_autocmd("User", {
      pattern = "NorgopolisEvent",
      callback = function(ev)
        got = ev.data
      end,
    })
    local err, delivered =
      helpers.await(norgopolis.publish, "notes", "saved", { file = "a.norg", lines = { 1, 2 } })
    assert.is_nil(err)
    assert.is_true(delivered >= 1)
    helpers.wait(5000, function()
      return got
    end, "the event")
    vim.api.nvim_del_autocmd(id)
    assert.equal("notes", got.module)
    assert.equal("saved", got.topic)
    assert.same({ file = "a.norg", lines = { 1, 2 } }, got.payload)
    assert.is_true(got.seq > 0)
  end)

  it("attaching and detaching fire User NorgopolisSession", function()
    local seen = {}
    local id = vim.api.nvim_create_autocmd("User", {
      pattern = "NorgopolisSession",
      callback = function(ev)
        table.insert(seen, ev.data.type)
      end,
    })
    helpers.await(norgopolis.detach)
    assert.is_nil((helpers.await(norgopolis.attach)))
    helpers.wait(5000, function()
      return vim.tbl_contains(seen, "detached") and vim.tbl_contains(seen, "attached")
    end, "session notices (got " .. vim.inspect(seen) .. ")")
    vim.api.nvim_del_autocmd(id)
    -- The session the attached notice left is the native side's session
    -- table, field for field (and not the notice's type).
    local core = require("norgopolis.core")
    assert.same(core.native().session(), core.session)
  end)
end)

describe("value mapping through echo", function()
  local cases = {
    { "nil", nil, nil },
    { "vim.NIL", vim.NIL, nil },
    { "true", true, true },
    { "false", false, false },
    { "small int", 7, 7 },
    { "negative", -123456, -123456 },
    { "2^53", 2 ^ 53, 2 ^ 53 },
    { "float", 3.25, 3.25 },
    { "tiny float", 1e-20, 1e-20 },
    { "string", "héllo", "héllo" },
    { "binary", "\0\1\255", "\0\1\255" },
    { "list", { 1, "a", true }, { 1, "a", true } },
    { "map", { a = { b = { c = 1 } } }, { a = { b = { c = 1 } } } },
    { "nested nil", { 1, vim.NIL }, { 1, vim.NIL } },
  }
  for _, case in ipairs(cases) do
    it("round-trips " .. case[1], function()
      local v, err = call("echo", case[2])
      assert.is_nil(err)
      assert.equal(1, #v)
      local got = v[1]
      if case[3] == nil then
        assert.equal(vim.NIL, got)
      else
        assert.same(case[3], got)
      end
    end)
  end

  it("round-trips 64-bit integers exactly", function()
    for _, n in ipairs({ 9007199254740993LL, -9223372036854775807LL - 1, 18446744073709551615ULL }) do
      local v = call("echo", n)
      assert.equal(tostring(n), tostring(v[1]))
    end
  end)

  it("keeps {} a list and vim.empty_dict() a map", function()
    local v = call("echo", { list = {}, map = vim.empty_dict() })[1]
    assert.is_nil(getmetatable(v.list))
    assert.equal(vim._empty_dict_mt, getmetatable(v.map))
  end)

  it("carries large binary results", function()
    local v = call("big", 1000000)[1]
    assert.equal(1000000, #v)
    assert.equal(255, v:byte(256))
  end)
end)
