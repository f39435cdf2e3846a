-- One headless Neovim of the two-Neovim demo (scripts/demo-nvim.sh).
--   nvim --headless -u NONE -i NONE --cmd "set rtp^=ROOT" -l scripts/demo-nvim.lua NAME
-- Reads commands from stdin, one a line, without blocking the main loop
-- (events print as they arrive), and answers each with its output and then
-- a line "--done--" that the driver waits for.

local name = arg[1] or "?"
local norgopolis = require("norgopolis")
local native = require("norgopolis.core").native()

-- A server this Neovim starts lingers 2 s after its last client leaves.
norgopolis.setup({ linger = "2s" })

local function out(line)
  io.stdout:write(line .. "\n")
  io.stdout:flush()
end

local function now()
  local sec, usec = vim.uv.gettimeofday()
  return os.date("%H:%M:%S", sec) .. ("%.3f"):format(usec / 1e6):sub(2)
end

local function done()
  out("--done--")
end

--- One line for a value, however nested.
local function show(v)
  return vim.inspect(v, { newline = " ", indent = "" })
end

--- Topics of events that arrived and no `await_event` has claimed yet.
local unclaimed = {}
local waiting_for_event = nil

local commands = {}

function commands.attach()
  norgopolis.attach(function(err, s)
    if err then
      out("cannot attach: " .. show(err))
    else
      out(
        ("attached: server pid %d, session %d, socket %s"):format(
          s.server_pid,
          s.session_id,
          s.socket
        )
      )
    end
    done()
  end)
end

function commands.subscribe()
  -- Both ways of listening: an on() handler for one topic, and the autocmd
  -- that sees every event.
  norgopolis.on("module.loaded", function(ev)
    out(
      ("on(module.loaded): %s started, pid %d (cause: %s)"):format(
        ev.payload.name,
        ev.payload.pid,
        ev.payload.cause
      )
    )
  end, { module = "norgopolis" })
  vim.api.nvim_create_autocmd("User", {
    pattern = "NorgopolisEvent",
    callback = function(ev)
      out(
        ("User NorgopolisEvent: module=%s topic=%s payload=%s"):format(
          ev.data.module,
          ev.data.topic,
          show(ev.data.payload)
        )
      )
      if waiting_for_event == ev.data.topic then
        waiting_for_event = nil
        done()
      else
        unclaimed[ev.data.topic] = true
      end
    end,
  })
  out('listening: on("module.loaded", fn) and the User NorgopolisEvent autocmd')
  done()
end

--- Finishes once an event of `topic` has arrived (it prints as it does),
--- at once if one came before this command.
function commands.await_event(topic)
  if unclaimed[topic] then
    unclaimed[topic] = nil
    return done()
  end
  waiting_for_event = topic
end

function commands.stream()
  out(("%s  invoke echo.count { n = 5, delay_ms = 300 }"):format(now()))
  norgopolis.invoke("echo", "count", { n = 5, delay_ms = 300 }, {
    on_value = function(v)
      out(("%s  on_value(%s)"):format(now(), show(v)))
    end,
    on_done = function(err)
      out(("%s  on_done(%s)"):format(now(), show(err)))
      done()
    end,
  })
end

function commands.fail()
  norgopolis.call(
    "echo",
    "fail",
    { code = "NotFound", message = "no note called inbox.norg" },
    function(err)
      out("call echo.fail -> err = " .. show(err))
      done()
    end
  )
end

function commands.publish()
  local payload = { file = "inbox.norg", lines = 42 }
  norgopolis.publish("notes", "note.saved", payload, function(err, n)
    out(
      err and ("publish failed: " .. show(err))
        or ("published notes/note.saved to %d session(s)"):format(n)
    )
    done()
  end)
end

function commands.echo()
  norgopolis.call("echo", "echo", { from = "nvim " .. name }, function(err, values)
    out("call echo.echo -> " .. (err and ("err = " .. show(err)) or show(values)))
    done()
  end)
end

function commands.status()
  norgopolis.status(function(err, st)
    if err then
      out("status failed: " .. show(err))
    else
      local mods = vim.tbl_map(function(m)
        return ("%s (pid %d, %d calls)"):format(m.name, m.pid, m.calls_served)
      end, st.modules)
      out(
        ("server pid %d: %d session(s), %d call(s) in flight, modules: %s"):format(
          st.pid,
          st.sessions,
          st.calls_in_flight,
          #mods > 0 and table.concat(mods, ", ") or "none"
        )
      )
    end
    done()
  end)
end

--- Status once this Neovim is the server's only client with nothing
--- running (the server notices a client that quit within moments).
function commands.alone()
  local function poll()
    norgopolis.status(function(err, st)
      if err or (st.sessions == 1 and st.calls_in_flight == 0) then
        return commands.status()
      end
      vim.defer_fn(poll, 50)
    end)
  end
  poll()
end

function commands.sleep()
  norgopolis.call("echo", "sleep", 60000, function() end)
  out("started echo.sleep(60000): a call that would take a minute")
  done()
end

function commands.quit()
  out(("quitting with %d request(s) in flight"):format(native.in_flight()))
  done()
  vim.cmd("qa!")
end

local function run(line)
  local cmd, rest = line:match("^(%S+)%s*(.-)$")
  local f = cmd and commands[cmd]
  if not f then
    out("unknown command: " .. line)
    return done()
  end
  local ok, err = pcall(f, rest)
  if not ok then
    out("error: " .. tostring(err))
    done()
  end
end

-- stdin through libuv, so the main loop keeps delivering results and events.
local stdin = assert(vim.uv.new_pipe(false))
stdin:open(0)
local buffered = ""
local eof = false
stdin:read_start(function(err, data)
  if err or not data then
    eof = true
    return
  end
  buffered = buffered .. data
  while true do
    local line, rest = buffered:match("^([^\n]*)\n(.*)$")
    if not line then
      break
    end
    buffered = rest
    vim.schedule(function()
      run(line)
    end)
  end
end)

vim.wait(1e9, function()
  return eof
end, 50)
vim.cmd("qa!")
