-- :Norgopolis subcommands and completion, against the real server.
local helpers = require("helpers")
local commands = require("norgopolis.commands")

local function complete(line)
  return vim.fn.getcompletion(line, "cmdline")
end

--- Runs an Ex command and returns the plugin messages it produced once
--- one matches `pattern`.
local function run(cmd, pattern)
  local msgs = helpers.capture_notify(function()
    vim.cmd(cmd)
  end, function(msgs)
    for _, m in ipairs(msgs) do
      if m.msg:match(pattern) then
        return true
      end
    end
  end)
  return table.concat(
    vim.tbl_map(function(m)
      return m.msg
    end, msgs),
    "\n"
  ),
    msgs
end

describe(":Norgopolis completion", function()
  it("completes subcommands", function()
    assert.same({
      "build",
      "call",
      "install",
      "load",
      "log",
      "modules",
      "notes",
      "restart",
      "shutdown",
      "start",
      "status",
      "unload",
    }, complete("Norgopolis "))
    assert.same({ "load", "log" }, complete("Norgopolis lo"))
  end)

  it("completes module names from disk", function()
    assert.same({ "echo", "notes" }, complete("Norgopolis load "))
    assert.same({ "notes" }, complete("Norgopolis unload n"))
    assert.same({ "echo", "notes" }, complete("Norgopolis call "))
  end)

  it("completes function names a manifest declares", function()
    assert.same({ "count", "echo", "sleep" }, complete("Norgopolis call notes "))
    assert.same({ "count" }, complete("Norgopolis call notes c"))
    assert.same({}, complete("Norgopolis call notes echo "))
  end)

  it("completes function names of a module without a manifest, as it lists them", function()
    local names = complete("Norgopolis call echo ")
    for _, f in ipairs({ "count", "crash", "echo", "fail", "sleep" }) do
      assert.is_true(vim.tbl_contains(names, f), f .. " in " .. vim.inspect(names))
    end
    assert.same({ "crash" }, complete("Norgopolis call echo cr"))
  end)
end)

describe(":Norgopolis", function()
  it("status shows the server", function()
    assert.matches("attached to server pid %d+", run("Norgopolis start", "attached"))
    local out = run("Norgopolis status", "norgopolis%-server")
    assert.matches("norgopolis%-server %S+, pid %d+, up", out)
    assert.matches("sessions: %d+", out)
    assert.matches("socket: " .. vim.pesc(helpers.socket), out)
  end)

  it("status lists recent module failures", function()
    local _, err = require("norgopolis").call_sync("echo", "crash", 9, { timeout = 15000 })
    assert.equal("Unavailable", err.code)
    local out = run("Norgopolis status", "norgopolis%-server")
    -- (earlier specs' crashes may be listed first)
    assert.matches(
      "recent module failures:\n.*  %d%d:%d%d:%d%d  echo %(pid %d+%): [^\n]*status 9",
      out
    )
  end)

  it("load and unload a module", function()
    run("Norgopolis unload echo", "echo")
    assert.matches("loaded echo %(pid %d+%)", run("Norgopolis load echo", "echo"))
    assert.matches("echo was already loaded", run("Norgopolis load echo", "echo"))
    local out = run("Norgopolis status", "norgopolis%-server")
    assert.matches("echo%s+pid %d+%s+running", out)
    assert.matches("unloaded echo", run("Norgopolis unload echo", "echo"))
    assert.matches("echo was not loaded", run("Norgopolis unload echo", "echo"))
    local _, msgs = run("Norgopolis load nope", "nope")
    assert.matches("load nope failed: NotFound", msgs[1].msg)
    assert.equal(vim.log.levels.ERROR, msgs[1].level)
  end)

  it("modules lists modules on disk with their declared functions", function()
    local out = run("Norgopolis modules", "dirs:")
    assert.matches("echo", out)
    assert.matches("notes 0%.3%.0 %- echo behind a manifest %[echo, count, sleep%]", out)
  end)

  it("call takes JSON or Lua arguments and shows results", function()
    assert.matches(
      "echo%.echo %-> {%s*a = 1%s*}",
      run('Norgopolis call echo echo {"a": 1}', "echo%.echo")
    )
    assert.matches("echo%.echo %-> { 1, 2 }", run("Norgopolis call echo echo [1, 2]", "echo%.echo"))
    assert.matches(
      'echo%.echo %-> {%s*x = "y"%s*}',
      run('Norgopolis call echo echo { x = "y" }', "echo%.echo")
    )
    assert.matches(
      "echo%.count %-> 3 items: { 0, 1, 2 }",
      run("Norgopolis call echo count 3", "echo%.count")
    )
    assert.matches("notes%.echo %-> vim%.NIL", run("Norgopolis call notes echo", "notes%.echo"))
    assert.matches(
      "fail failed: NotFound: gone",
      run('Norgopolis call echo fail {"code": "NotFound", "message": "gone"}', "failed")
    )
    assert.matches("cannot read", run("Norgopolis call echo echo {oops", "cannot read"))
    assert.matches("usage", run("Norgopolis call echo", "usage"))
  end)

  it("parses literals safely", function()
    assert.same({ true, { 1, 2 } }, { commands.parse_literal("[1, 2]") })
    assert.equal(vim.NIL, select(2, commands.parse_literal("null")))
    assert.equal(vim.NIL, select(2, commands.parse_literal("vim.NIL")))
    local ok = commands.parse_literal("os.exit(1)")
    assert.is_false(ok)
  end)

  it("log opens the server log", function()
    vim.cmd("Norgopolis log")
    helpers.wait(5000, function()
      return vim.api.nvim_buf_get_name(0) == helpers.log
    end, "the log buffer")
    assert.is_true(vim.bo.readonly)
    vim.cmd("bwipeout")
  end)

  it("rejects unknown subcommands", function()
    assert.matches('unknown subcommand "frobnicate"', run("Norgopolis frobnicate", "unknown"))
  end)

  it("restart replaces the server", function()
    local out = run("Norgopolis restart", "restarted")
    local old, new = out:match("server restarted: pid (%d+) %-> (%d+)")
    assert.is_not_nil(new)
    assert.are_not.equal(old, new)
    assert.is_true(helpers.alive(tonumber(new)))
    helpers.wait(10000, function()
      return not helpers.alive(tonumber(old))
    end, "the old server to exit")
  end)

  it("shutdown stops the server", function()
    -- Attach first: this test must not depend on whether the one before it
    -- left a session (a restart re-attaches in the background).
    assert.is_nil((helpers.await(require("norgopolis").attach)))
    local pid = require("norgopolis.core").native().session().server_pid
    assert.matches("server shut down", run("Norgopolis shutdown", "shut down"))
    helpers.wait(10000, function()
      return not helpers.alive(pid)
    end, "the server to exit")
  end)

  it("status after shutdown says no server runs, and starts none", function()
    assert.matches("attached to server pid %d+", run("Norgopolis start", "attached"))
    assert.matches("server shut down", run("Norgopolis shutdown", "shut down"))
    helpers.await(require("norgopolis").detach)
    helpers.wait(10000, function()
      return vim.uv.fs_stat(helpers.socket) == nil
    end, "the socket to go")
    local out = run("Norgopolis status", "server")
    assert.matches("no server is running %(`:Norgopolis start` starts one%)", out)
    assert.is_nil(vim.uv.fs_stat(helpers.socket))
    assert.matches("attached to server pid %d+", run("Norgopolis start", "attached"))
    assert.is_not_nil(vim.uv.fs_stat(helpers.socket))
  end)

  it("the status float opens and closes with q", function()
    local ui = require("norgopolis.ui")
    local win = ui.float({ "a", "b" }, "t")
    assert.equal("editor", vim.api.nvim_win_get_config(win).relative)
    vim.api.nvim_feedkeys("q", "x", false)
    assert.is_false(vim.api.nvim_win_is_valid(win))
  end)
end)
