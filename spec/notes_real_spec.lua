-- Two Neovims on the real `notes` module (target/modules/notes, laid out
-- by `make build`) while its workspace changes: this Neovim and a second
-- headless one, both attached to the run's server. A `:write` in one is
-- visible to `backlinks`, `search` and `tasks` from the other as soon as
-- that one has the `notes.changed` event; both query in a loop while the
-- test renames and deletes files, and no answer fails or names a file
-- whose deletion was announced before the query started. The write ->
-- visible delay is printed, not asserted.
local helpers = require("helpers")
local norgopolis = require("norgopolis")
local notes = require("norgopolis.notes")

local module_dir = helpers.root .. "/target/modules/notes"

--- Every call waits at most this long: a failure bound, not a timing.
local LONG = 20000

---@param path string
---@param lines string[]
local function write(path, lines)
  vim.fn.mkdir(vim.fn.fnamemodify(path, ":h"), "p")
  vim.fn.writefile(lines, path)
end

--- Calls a notes function from this Neovim and returns its results.
---@return table[]
local function call(fn, args)
  local values, err = norgopolis.call_sync("notes", fn, args, { timeout = LONG })
  assert.is_nil(err, vim.inspect(err))
  return values
end

---@param results table[]
---@return string[] sorted paths
local function paths_of(results)
  local out = vim.tbl_map(function(r)
    return r.path
  end, results)
  table.sort(out)
  return out
end

-- Runs in both Neovims (here through loadstring, there through
-- nvim_exec_lua): follows `notes.changed`, and with `start()` queries
-- backlinks, search and tasks one after another until `stop()`. Every
-- answer is checked: no error, each result a map with a path, and no
-- path whose deletion was announced before the query was sent (the
-- files deleted here are never created again).
local PROBE = [[
local target, word = ...
local norgopolis = require("norgopolis")
local P = {
  gen = 0, fresh = 0, queries = 0, running = false, stopped = true,
  errors = {}, stale = {}, bad = {}, deleted = {}, events = {},
}
P.off = norgopolis.on("notes.changed", function(ev)
  local c = ev.payload
  table.insert(P.events, { path = c.path, kind = c.kind, t = vim.uv.hrtime() })
  P.deleted[c.path] = c.kind == "deleted" or nil
  P.gen, P.fresh = P.gen + 1, 0
end, { module = "notes" })
local queries = {
  { "backlinks", { path = target } },
  { "search", { query = word, limit = 1000, workspace = "main" } },
  { "tasks", { workspace = "main" } },
}
local i = 0
local function step()
  if not P.running then
    P.stopped = true
    return
  end
  i = i % #queries + 1
  local fn, args = queries[i][1], queries[i][2]
  local gen, dead = P.gen, vim.deepcopy(P.deleted)
  norgopolis.call("notes", fn, args, function(err, values)
    P.queries = P.queries + 1
    if err then
      table.insert(P.errors, ("%s: %s: %s"):format(fn, err.code, err.message))
    else
      for _, r in ipairs(values) do
        if type(r) ~= "table" or type(r.path) ~= "string" or type(r.line) ~= "number"
          or (fn == "backlinks" and type(r.snippet) ~= "string") then
          table.insert(P.bad, fn .. ": " .. vim.inspect(r))
        elseif dead[r.path] then
          table.insert(P.stale, ("%s named %s after its deletion"):format(fn, r.path))
        end
      end
    end
    if gen == P.gen then
      P.fresh = P.fresh + 1
    end
    vim.schedule(step)
  end)
end
function P.start()
  P.running, P.stopped = true, false
  step()
end
function P.stop()
  P.running = false
end
--- What can cross RPC: the counters and findings.
function P.report()
  return {
    gen = P.gen, fresh = P.fresh, queries = P.queries, stopped = P.stopped,
    errors = P.errors, stale = P.stale, bad = P.bad, deleted = vim.tbl_keys(P.deleted),
  }
end
--- The newest event for `path` since `since` (index into events), if any.
function P.last(path, since)
  for k = #P.events, (since or 0) + 1, -1 do
    if P.events[k].path == path then
      return P.events[k]
    end
  end
end
--- Whether the events say `gone` are deleted and `new` exist, and every
--- function has been answered once more since the latest event.
function P.settled(gone, new)
  for _, p in ipairs(gone) do
    if not P.deleted[p] then
      return false
    end
  end
  for _, p in ipairs(new) do
    local ev = P.last(p)
    if not ev or ev.kind == "deleted" then
      return false
    end
  end
  return P.fresh >= #queries
end
return P
]]

--- The second Neovim (helpers.spawn_nvim), listening on a socket, with
--- the plugin.
---@class RemoteNvim
---@field chan integer
---@field proc vim.SystemObj
---@field exited? vim.SystemCompleted
local Remote = {}
Remote.__index = Remote

---@return RemoteNvim
function Remote.start()
  local addr = helpers.tmp .. "/other-nvim.sock"
  local self = setmetatable({}, Remote)
  -- Serves RPC while it waits: its main loop turns inside vim.wait.
  self.proc = helpers.spawn_nvim(
    ("vim.fn.serverstart(%q)\nwhile true do\n  vim.wait(3600000, function() return false end, 50)\nend"):format(
      addr
    ),
    {},
    function(r)
      self.exited = r
    end
  )
  helpers.wait(LONG, function()
    return vim.uv.fs_stat(addr) ~= nil or self.exited
  end, "the other Neovim's socket")
  assert(not self.exited, "the other Neovim exited: " .. vim.inspect(self.exited))
  self.chan = vim.fn.sockconnect("pipe", addr, { rpc = true })
  self:lua([[vim.cmd.runtime("plugin/norgopolis.lua")]])
  return self
end

--- Runs Lua in the other Neovim and returns its result.
---@param code string
function Remote:lua(code, ...)
  return vim.rpcrequest(self.chan, "nvim_exec_lua", code, { ... })
end

function Remote:stop()
  pcall(vim.rpcnotify, self.chan, "nvim_command", "qall!")
  helpers.wait(LONG, function()
    return self.exited ~= nil
  end, "the other Neovim to exit")
  pcall(vim.fn.chanclose, self.chan)
end

---@param xs number[]
---@return string min / median / max in ms
local function spread(xs)
  table.sort(xs)
  return ("min %.1f, median %.1f, max %.1f ms (%d writes)"):format(
    xs[1] / 1e6,
    xs[math.floor((#xs + 1) / 2)] / 1e6,
    xs[#xs] / 1e6,
    #xs
  )
end

describe("two Neovims on the real notes module", function()
  local restore, other, here_probe
  local ws, target

  setup(function()
    assert(
      vim.uv.fs_stat(module_dir .. "/notes"),
      "the real notes module is missing: run `make build` first"
    )
    ws = helpers.tmp .. "/real-notes-ws"
    vim.fn.mkdir(ws, "p")
    ws = assert(vim.uv.fs_realpath(ws))
    target = ws .. "/target.norg"
    write(target, { "* Target", "  The page everything links to." })

    restore = helpers.swap_notes(module_dir, {
      "[modules.notes]",
      ('workspaces = { main = "%s" }'):format(ws),
      ('cache_dir = "%s"'):format(helpers.tmp .. "/real-notes-cache"),
    })
    assert.is_nil((helpers.await(norgopolis.unload, "notes")))
    assert.equals(1, #call("files", { workspace = "main" }))

    here_probe = assert(loadstring(PROBE))(target, "churnword")
    other = Remote.start()
    other:lua(
      "local src = ...; _G.np_probe = assert(loadstring(src))(select(2, ...))",
      PROBE,
      target,
      "churnword"
    )
    -- Both attached: the other has subscribed, which attaches it.
    helpers.wait(LONG, function()
      return other:lua("return require('norgopolis.core').native().session() ~= nil")
    end, "the other Neovim to attach")
  end)

  teardown(function()
    if here_probe then
      here_probe.stop()
      here_probe.off()
    end
    if other then
      other:stop()
    end
    pcall(helpers.await, norgopolis.unload, "notes")
    if restore then
      restore()
    end
  end)

  it("a :write in the other Neovim is visible here once notes.changed arrives", function()
    local event_ms, visible_ms = {}, {}
    for round = 1, 5 do
      local path = ("%s/from-other/note%d.norg"):format(ws, round)
      local word = "otherword" .. round
      local since = #here_probe.events
      local wrote = other:lua(
        [[
        local path, lines = ...
        vim.fn.mkdir(vim.fn.fnamemodify(path, ":h"), "p")
        vim.cmd.edit(vim.fn.fnameescape(path))
        vim.api.nvim_buf_set_lines(0, 0, -1, false, lines)
        local t = vim.uv.hrtime()
        vim.cmd("silent write")
        vim.cmd("bwipeout")
        return t
        ]],
        path,
        {
          "* Note " .. round,
          "  " .. word .. " points at {:$/target:} from the other side.   ",
          "  - ( ) chase " .. word,
        }
      )
      local ev
      helpers.wait(LONG, function()
        ev = here_probe.last(path, since)
        return ev and ev.kind ~= "deleted"
      end, "notes.changed for " .. path)
      -- Asked on the event, without retrying: it must already be there.
      local back = vim.tbl_filter(function(r)
        return r.path == path
      end, call("backlinks", { path = target }))
      local hits = call("search", { query = word, workspace = "main" })
      local tasks = vim.tbl_filter(function(r)
        return r.path == path
      end, call("tasks", { workspace = "main" }))
      local visible = vim.uv.hrtime()
      assert.equals(1, #back, vim.inspect(back))
      assert.same({ 2, "main" }, { back[1].line, back[1].workspace })
      assert.equals(
        word .. " points at {:$/target:} from the other side.",
        back[1].snippet,
        "the linking line, trimmed"
      )
      assert.same({ path }, paths_of(hits))
      assert.same({ { 3, "undone", "chase " .. word } }, {
        { tasks[1].line, tasks[1].state, tasks[1].text },
      })
      table.insert(event_ms, ev.t - wrote)
      table.insert(visible_ms, visible - wrote)
    end
    io.stdout:write(
      ("\n[notes-real] other :write -> here notes.changed: %s\n[notes-real] other :write -> here backlinks+search+tasks answered: %s\n"):format(
        spread(event_ms),
        spread(visible_ms)
      )
    )

    -- The front end shows the linking line in the quickfix list.
    local done, e, n = false, nil, nil
    notes.backlinks(target, {
      open = false,
      on_done = function(err, count)
        done, e, n = true, err, count
      end,
    })
    helpers.wait(LONG, function()
      return done
    end, "backlinks() to finish")
    assert.is_nil(e)
    assert.equals(5, n)
    for _, item in ipairs(vim.fn.getqflist()) do
      assert.matches("^otherword%d points at {:%$/target:} from the other side%.$", item.text)
      assert.equals(2, item.lnum)
    end
  end)

  it("a :write here is visible to the other Neovim once notes.changed arrives there", function()
    local path = ws .. "/from-here.norg"
    write(path, { "* From here", "  nothing yet" })
    -- Both have seen it created, so that no round takes that event for
    -- its own write.
    helpers.wait(LONG, function()
      return here_probe.last(path) and other:lua("return _G.np_probe.last(...) ~= nil", path)
    end, "the first version of " .. path)
    vim.cmd.edit(vim.fn.fnameescape(path))
    local event_ms, visible_ms = {}, {}
    for round = 1, 5 do
      local word = "hereword" .. round
      local since = other:lua("return #_G.np_probe.events")
      vim.api.nvim_buf_set_lines(0, 0, -1, false, {
        "* From here, round " .. round,
        "  - (!) urgent " .. word,
        "",
        "  " .. word .. " links {:target:} too",
      })
      local wrote = vim.uv.hrtime()
      vim.cmd("silent write")
      local seen = other:lua(
        [[
        local path, since, target, word, long = ...
        local P = _G.np_probe
        local ev
        assert(vim.wait(long, function()
          ev = P.last(path, since)
          return ev and ev.kind ~= "deleted"
        end, 2), "no notes.changed for " .. path)
        local n = require("norgopolis")
        local function call(fn, args)
          local values, err = n.call_sync("notes", fn, args, { timeout = long })
          assert(values, vim.inspect(err))
          return values
        end
        local back = call("backlinks", { path = target })
        local hits = call("search", { query = word, workspace = "main" })
        local tasks = call("tasks", { state = "urgent", workspace = "main" })
        return { event = ev.t, visible = vim.uv.hrtime(), back = back, hits = hits, tasks = tasks }
        ]],
        path,
        since,
        target,
        word,
        LONG
      )
      local back = vim.tbl_filter(function(r)
        return r.path == path
      end, seen.back)
      assert.equals(1, #back, vim.inspect(seen))
      assert.same({ 4, word .. " links {:target:} too" }, { back[1].line, back[1].snippet })
      assert.same({ path }, paths_of(seen.hits))
      assert.same({ { path, 2, "urgent " .. word } }, {
        { seen.tasks[1].path, seen.tasks[1].line, seen.tasks[1].text },
      })
      assert.equals(1, #seen.tasks)
      table.insert(event_ms, seen.event - wrote)
      table.insert(visible_ms, seen.visible - wrote)
    end
    vim.cmd("bwipeout")
    io.stdout:write(
      ("\n[notes-real] here :write -> other notes.changed: %s\n[notes-real] here :write -> other backlinks+search+tasks answered: %s\n"):format(
        spread(event_ms),
        spread(visible_ms)
      )
    )
  end)

  it("both query in a loop while files are renamed and deleted, and every answer holds", function()
    local dir = ws .. "/churn"
    local N = 8
    local since = #here_probe.events
    local alive = {}
    for k = 1, N do
      local p = ("%s/c%d.norg"):format(dir, k)
      write(p, {
        "* Churn " .. k,
        "  churnword " .. k .. " and {:$/target:}",
        "  - ( ) churn task " .. k,
      })
      alive[p] = true
    end
    helpers.wait(LONG, function()
      for p in pairs(alive) do
        if not here_probe.last(p, since) then
          return false
        end
      end
      return true
    end, "the churn files to be indexed")

    here_probe.start()
    other:lua("_G.np_probe.start()")

    --- Waits until both Neovims have had the events for `gone` (deleted)
    --- and `new` (created), and each has answered every function once
    --- more since its latest event.
    local function settle(gone, new)
      helpers.wait(LONG, function()
        return here_probe.settled(gone, new)
          and other:lua("return _G.np_probe.settled(...)", gone, new)
      end, "both Neovims to see " .. vim.inspect({ gone = gone, new = new }))
    end

    -- One change at a time, each awaited: odd files renamed, even deleted.
    for k = 1, N do
      local p = ("%s/c%d.norg"):format(dir, k)
      if k % 2 == 1 then
        local to = ("%s/renamed/c%d-r.norg"):format(ws, k)
        vim.fn.mkdir(vim.fn.fnamemodify(to, ":h"), "p")
        assert(vim.uv.fs_rename(p, to))
        alive[p], alive[to] = nil, true
        settle({ p }, { to })
      else
        assert(vim.uv.fs_unlink(p))
        alive[p] = nil
        settle({ p }, {})
      end
    end

    -- Then a burst, unawaited: the folder of the renamed files renamed,
    -- one of them deleted there, another renamed once more.
    local moved = {}
    for p in pairs(alive) do
      moved[#moved + 1] = p
    end
    table.sort(moved)
    assert(vim.uv.fs_rename(ws .. "/renamed", ws .. "/moved"))
    alive = {}
    for _, p in ipairs(moved) do
      alive[(p:gsub("/renamed/", "/moved/"))] = true
    end
    local first = (moved[1]:gsub("/renamed/", "/moved/"))
    local second = (moved[2]:gsub("/renamed/", "/moved/"))
    assert(vim.uv.fs_unlink(first))
    alive[first] = nil
    local last = ws .. "/moved/final.norg"
    assert(vim.uv.fs_rename(second, last))
    alive[second], alive[last] = nil, true
    -- A file created and deleted within one burst may never be announced,
    -- so what is awaited is the old paths gone and the survivors there.
    settle(moved, vim.tbl_keys(alive))

    here_probe.stop()
    other:lua("_G.np_probe.stop()")
    helpers.wait(LONG, function()
      return here_probe.stopped and other:lua("return _G.np_probe.report().stopped")
    end, "both loops to stop")

    local expected = vim.tbl_keys(alive)
    table.sort(expected)
    for who, r in pairs({
      here = here_probe.report(),
      other = other:lua("return _G.np_probe.report()"),
    }) do
      assert.same({}, r.errors, who .. " had errors")
      assert.same({}, r.bad, who .. " had malformed results")
      assert.same({}, r.stale, who .. " saw deleted files")
      assert.is_true(r.queries >= 3 * (N + 1), who .. " answered only " .. r.queries)
      io.stdout:write(
        ("\n[notes-real] %s answered %d queries during the churn\n"):format(who, r.queries)
      )
    end
    -- The end state, from both sides, is exactly the files that survive.
    local function churned(results)
      return vim.tbl_filter(function(p)
        return not p:find("/from-", 1, true)
      end, paths_of(results))
    end
    assert.same(expected, churned(call("backlinks", { path = target })))
    assert.same(expected, churned(call("search", { query = "churnword", workspace = "main" })))
    local theirs = other:lua(
      [[return require("norgopolis").call_sync("notes", "backlinks", { path = ... }, { timeout = 20000 })]],
      target
    )
    assert.same(expected, churned(theirs))
    -- Of the N / 2 renamed, one deleted in the burst; `final` is another.
    assert.equals(N / 2 - 1, #expected)
  end)
end)
