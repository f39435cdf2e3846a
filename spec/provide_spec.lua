-- This Neovim as an external module: provide() registers it with the real
-- server; another Neovim process and the CLI call it; streams, errors,
-- refusals, cancellation, stop, and a main loop that keeps turning.
local norgopolis = require("norgopolis")
local helpers = require("helpers")

--- Provides `name` and waits until the server has registered it.
local function provide(name, fns)
  local ready, done = false, nil
  local p = norgopolis.provide(name, fns, {
    on_ready = function()
      ready = true
    end,
    on_done = function(err)
      done = err or {}
    end,
  })
  helpers.wait(10000, function()
    return ready or done
  end, "the registration of " .. name)
  assert.is_nil(done, vim.inspect(done))
  return p
end

--- Runs `script` in another headless Neovim with the plugin; its stdout.
--- This Neovim keeps turning its main loop meanwhile (it serves the calls).
local function other_nvim(script)
  local result
  helpers.spawn_nvim(script, {}, function(r)
    result = r
  end)
  helpers.wait(20000, function()
    return result ~= nil
  end, "the other Neovim")
  assert.equal(0, result.code, result.stderr)
  return vim.trim(result.stdout)
end

--- Runs the CLI without blocking this Neovim's main loop.
local function cli(args)
  local result
  vim.system(
    vim.list_extend({ helpers.root .. "/target/debug/norgopolis" }, args),
    { text = true },
    function(r)
      result = r
    end
  )
  helpers.wait(20000, function()
    return result ~= nil
  end, "the CLI")
  return result
end

local functions = {
  echo = function(args)
    return args
  end,
  count = function(n, emit)
    for i = 0, n - 1 do
      emit(i)
    end
  end,
  missing = function()
    error({ code = "NotFound", message = "nothing here" })
  end,
  boom = function()
    error("it broke")
  end,
  pid = function()
    return vim.fn.getpid()
  end,
}

--- Calls `name.echo` until the server no longer knows it (the provider's
--- connection has closed there); returns that error.
local function until_gone(name)
  for _ = 1, 200 do
    local _, err = norgopolis.call_sync(name, "echo", 1, { timeout = 5000 })
    if err and err.code == "NotFound" then
      return err
    end
  end
  error(name .. " is still served")
end

describe("provide", function()
  local p, n = nil, 0
  before_each(function()
    assert.is_nil((helpers.await(norgopolis.attach)))
    -- A name of its own per test: a stopped provider's name is freed when
    -- the server has seen its connection close.
    n = n + 1
    p = provide("nvimext" .. n, functions)
  end)
  after_each(function()
    p:stop()
    helpers.wait(5000, function()
      return not p:active()
    end, "the provider to stop")
  end)

  it("is called from another Neovim: results, streams and errors", function()
    local out = other_nvim([[
      local np = require("norgopolis")
      local name = "]] .. p.name .. [["
      local function show(v, e) return vim.json.encode({ v = v, e = e }) end
      local echo, e1 = np.call_sync(name, "echo", { a = 1, list = { 1, 2 } }, { timeout = 10000 })
      local count, e2 = np.call_sync(name, "count", 300, { timeout = 10000 })
      local _, e3 = np.call_sync(name, "missing", nil, { timeout = 10000 })
      local _, e4 = np.call_sync(name, "boom", nil, { timeout = 10000 })
      local _, e5 = np.call_sync(name, "nope", nil, { timeout = 10000 })
      local pid = np.call_sync(name, "pid", nil, { timeout = 10000 })
      io.stdout:write(vim.json.encode({
        echo = echo, e1 = e1, n = #count, last = count[#count], e2 = e2,
        e3 = e3, e4 = e4, e5 = e5, pid = pid[1],
      }))
    ]])
    local got = vim.json.decode(out)
    assert.same({ { a = 1, list = { 1, 2 } } }, got.echo)
    assert.is_nil(got.e1)
    assert.equal(300, got.n, "streamed past the initial credit")
    assert.equal(299, got.last)
    assert.is_nil(got.e2)
    assert.same({ code = "NotFound", message = "nothing here" }, got.e3)
    assert.equal("Internal", got.e4.code)
    assert.truthy(got.e4.message:find("it broke", 1, true), got.e4.message)
    assert.equal("NotFound", got.e5.code)
    assert.truthy(
      got.e5.message:find("has: boom, count, echo, missing, pid", 1, true),
      got.e5.message
    )
    assert.equal(vim.fn.getpid(), got.pid, "the call ran in this Neovim")
  end)

  it("is called from the CLI, and status shows it as external", function()
    local r = cli({ "call", p.name, "count", "3" })
    assert.equal(0, r.code, r.stderr)
    assert.equal("0\n1\n2\n", r.stdout)
    local s = cli({ "status", "--json" })
    local status = vim.json.decode(s.stdout)
    local mine
    for _, m in ipairs(status.modules) do
      if m.name == p.name then
        mine = m
      end
    end
    assert.is_not_nil(mine, s.stdout)
    assert.equal("external", mine.kind)
    assert.equal(vim.fn.getpid(), mine.pid)
  end)

  it("keeps the main loop turning while a long stream runs", function()
    -- 2000 items of 0.2 ms of work each: 0.4 s of the main loop's time.
    local q = provide("grinder", {
      grind = function(n, emit)
        for i = 1, n do
          local t = vim.uv.hrtime()
          while vim.uv.hrtime() - t < 2e5 do
          end
          emit(i)
        end
      end,
    })
    -- A timer wanting the main loop every millisecond: the longest wait
    -- between its turns is how long the editor was frozen.
    local last, longest = vim.uv.hrtime(), 0
    local timer = assert(vim.uv.new_timer())
    timer:start(1, 1, function()
      local now = vim.uv.hrtime()
      longest = math.max(longest, now - last)
      last = now
    end)
    local items, done = 0, false
    norgopolis.invoke("grinder", "grind", 2000, {
      on_value = function()
        items = items + 1
      end,
      on_done = function(err)
        assert.is_nil(err)
        done = true
      end,
    })
    helpers.wait(30000, function()
      return done
    end, "the stream")
    timer:stop()
    timer:close()
    q:stop()
    assert.equal(2000, items)
    -- Frozen all along would be 400 ms at least; slices are 2 ms.
    assert.is_true(longest < 200e6, ("the main loop stalled for %.0f ms"):format(longest / 1e6))
  end)

  it("stops emitting a stream whose caller cancelled", function()
    local emitted, returned = 0, false
    local q = provide("forever", {
      run = function(_, emit)
        while emit(emitted) do
          emitted = emitted + 1
        end
        returned = true
      end,
    })
    local got = 0
    local call
    call = norgopolis.invoke("forever", "run", nil, {
      on_value = function()
        got = got + 1
        if got == 100 then
          call:cancel()
        end
      end,
    })
    helpers.wait(10000, function()
      return got >= 100 and next(q.calls) == nil
    end, "the cancel to reach the provider")
    local at = emitted
    -- A few more turns of the main loop: the call is not resumed again.
    local turns = 0
    helpers.wait(5000, function()
      turns = turns + 1
      return turns > 20
    end, "some main loop turns")
    assert.equal(at, emitted)
    -- Its emit said the caller had gone, if it ran again at all.
    assert.is_true(returned or emitted == at)
    q:stop()
  end)

  it("refuses a name already provided, and frees it on stop", function()
    local err
    local q = norgopolis.provide(p.name, functions, {
      on_done = function(e)
        err = e
      end,
    })
    helpers.wait(10000, function()
      return err ~= nil
    end, "the refusal")
    assert.equal("AlreadyExists", err.code)
    assert.truthy(err.message:find("another process provides it", 1, true), err.message)
    assert.is_false(q:active())

    p:stop()
    helpers.wait(5000, function()
      return not p:active()
    end, "the provider to stop")
    until_gone(p.name)
    p = provide(p.name, functions)
    local again = norgopolis.call_sync(p.name, "echo", 2, { timeout = 5000 })
    assert.same({ 2 }, again)
  end)

  it("checks its arguments at the caller's line", function()
    assert.has_error(function()
      norgopolis.provide("", functions)
    end)
    assert.has_error(function()
      norgopolis.provide("x", {})
    end)
    assert.has_error(function()
      norgopolis.provide("x", { f = 1 })
    end)
  end)
end)
