-- Modules written with the Python and Lua SDKs (examples/modules/), called
-- from Neovim through the real server: results, streams, errors and
-- cancellation look exactly as with a Rust module.
local norgopolis = require("norgopolis")
local helpers = require("helpers")

local modules = { "python-echo", "lua-echo" }

for _, name in ipairs(modules) do
  -- Folders linked into the run's modules dir, as `module install` would copy them.
  vim.uv.fs_symlink(helpers.root .. "/examples/modules/" .. name, helpers.modules .. "/" .. name)
end

local function call(module, fn, args)
  return norgopolis.call_sync(module, fn, args, { timeout = 20000 })
end

--- Invokes `fn`, passing each item to `on_value(v, handle)`; waits for the
--- end and returns its error.
local function stream(module, fn, args, on_value)
  local done, err = false, nil
  local h
  h = norgopolis.invoke(module, fn, args, {
    on_value = function(v)
      on_value(v, h)
    end,
    on_done = function(e)
      err, done = e, true
    end,
  })
  helpers.wait(20000, function()
    return done
  end, module .. " " .. fn)
  return err
end

for _, module in ipairs(modules) do
  describe(module, function()
    it("echoes nested values unchanged", function()
      local value = {
        list = { 1, "two", vim.NIL, true, 2.5 },
        map = { a = { b = "c" } },
        empty = vim.empty_dict(),
      }
      local values, err = call(module, "echo", value)
      assert.is_nil(err)
      assert.same({ value }, values)
    end)

    it("streams items in order", function()
      local items = {}
      local err = stream(module, "count", 300, function(v)
        table.insert(items, v)
      end)
      assert.is_nil(err)
      assert.equal(300, #items)
      for i, v in ipairs(items) do
        assert.equal(i - 1, v)
      end
    end)

    it("fails with the code and message the module raised", function()
      local _, err = call(module, "fail", { code = "FailedPrecondition", message = "not ready" })
      assert.equal("FailedPrecondition", err.code)
      assert.equal("not ready", err.message)
      _, err = call(module, "nope")
      assert.equal("NotFound", err.code)
      assert.truthy(err.message:find("has no function 'nope'", 1, true), err.message)
    end)

    it("stops an endless stream on cancel and goes on serving", function()
      local seen = 0
      local err = stream(module, "count", 1000000000, function(_, h)
        seen = seen + 1
        if seen == 10 then
          h:cancel()
        end
      end)
      assert.equal("Cancelled", err and err.code)
      local values, err2 = call(module, "echo", "still here")
      assert.is_nil(err2)
      assert.same({ "still here" }, values)
    end)

    it("answers past a deadline with DeadlineExceeded", function()
      local _, err = norgopolis.call_sync(module, "sleep", 30000, { timeout = 300 })
      assert.truthy(err)
      assert.equal("DeadlineExceeded", err.code)
    end)
  end)
end
