-- Options that shape a server this Neovim starts.
local helpers = require("helpers")
local norgopolis = require("norgopolis")

--- Whether process `pid` has exited (gone, or a zombie nobody reaped).
---@param pid integer
---@return boolean
local function exited(pid)
  local f = io.open("/proc/" .. pid .. "/stat")
  if not f then
    return true
  end
  local stat = f:read("*a")
  f:close()
  return stat:match("^%d+ %b() (%a)") == "Z"
end

describe("a server started by this Neovim", function()
  after_each(function()
    local running = require("norgopolis.core").session
    norgopolis.setup({})
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
    if running then
      -- A server on its way out still holds its lock: the next test's
      -- spawn would meet it and report it instead of its own failure.
      helpers.wait(15000, function()
        return exited(running.server_pid)
      end, "the server to exit")
    end
  end)

  it("gets modules_dirs and linger from the config", function()
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
    local extra = helpers.tmp .. "/extra-mods"
    vim.fn.mkdir(extra, "p")
    norgopolis.setup({ modules_dirs = { helpers.modules, extra }, linger = 250 })
    local err, st = helpers.await(norgopolis.status)
    assert.is_nil(err)
    -- the bundled modules come last, after the user's dirs
    assert.same({ helpers.modules, extra, helpers.root .. "/target/modules" }, st.modules_dirs)
    local cmdline = table.concat(
      vim.split(vim.fn.readfile("/proc/" .. st.pid .. "/cmdline", "b")[1] or "", "\n"),
      " "
    )
    assert.matches("%-%-linger 250ms", cmdline)
  end)

  it("reports a spawn failure with the server's own message", function()
    helpers.await(norgopolis.shutdown)
    helpers.await(norgopolis.detach)
    norgopolis.setup({ server = "/bin/false" })
    local err = helpers.await(norgopolis.attach)
    assert.is_not_nil(err)
    assert.is_string(err.code)
    assert.matches("/bin/false", err.message)
  end)
end)
