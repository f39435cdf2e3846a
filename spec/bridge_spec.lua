-- The background runtime -> main loop bridge, without a server.
local native = require("norgopolis.core").native()
local core = require("norgopolis.core")
local helpers = require("helpers")

local function ticker(n, interval)
  local got, done = {}, nil
  local id = native._ticker(n, interval)
  core.track(id, nil, {
    on_value = function(v)
      table.insert(got, v)
    end,
    on_done = function(err, result)
      done = { err = err, result = result }
    end,
  })
  return id, got, function()
    return done
  end
end

describe("bridge", function()
  it("delivers every item in order, then one done", function()
    local _, got, done = ticker(2000, 0)
    helpers.wait(10000, done, "the ticker")
    assert.equal(2000, #got)
    for i = 1, 2000 do
      assert.equal(i - 1, got[i])
    end
    assert.is_nil(done().err)
    assert.equal(2000, done().result)
  end)

  it("cancel stops the stream and reports Cancelled", function()
    local id, got, done = ticker(100000, 10)
    helpers.wait(5000, function()
      return #got >= 2
    end, "two items")
    core.cancel(id)
    helpers.wait(5000, done, "the cancelled done")
    assert.equal("Cancelled", done().err.code)
    local seen = #got
    -- the task is gone: nothing is left running that could deliver more
    assert.equal(0, native.in_flight())
    assert.is_true(seen < 100000)
  end)

  it("does not block the main loop: a timer keeps firing meanwhile", function()
    local ticks = 0
    local timer = vim.uv.new_timer()
    timer:start(
      0,
      5,
      vim.schedule_wrap(function()
        ticks = ticks + 1
      end)
    )
    local _, got, done = ticker(10, 30)
    helpers.wait(5000, done, "the slow ticker")
    timer:stop()
    timer:close()
    assert.equal(10, #got)
    assert.is_true(ticks >= 5, "timer fired " .. ticks .. " times")
  end)
end)

describe("panics", function()
  it("a panic in a native function is a Lua error, and the library keeps working", function()
    local ok, err = pcall(native._panic, "boom")
    assert.is_false(ok)
    assert.matches("boom", tostring(err))
    local _, got, done = ticker(3, 0)
    helpers.wait(5000, done, "a ticker after the panic")
    assert.same({ 0, 1, 2 }, got)
  end)

  it("a panic in a background task fails that request with Internal", function()
    local err
    core.track(native._panic("task boom", true), nil, {
      on_done = function(e)
        err = e
      end,
    })
    helpers.wait(5000, function()
      return err
    end, "the panicked request's done")
    assert.equal("Internal", err.code)
    assert.matches("task boom", err.message)
  end)
end)
