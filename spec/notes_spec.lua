-- require("norgopolis.notes") and :Norgopolis notes, against the real
-- server and a `notes` module. By default the stand-in under
-- spec/fixtures/notes (same call contract, a plain scan of the files);
-- NORGOPOLIS_NOTES_MODULE=/path/to/module-folder points the same
-- assertions at another implementation, such as the real module.
local helpers = require("helpers")
local notes = require("norgopolis.notes")
local norgopolis = require("norgopolis")

local module_dir = vim.env.NORGOPOLIS_NOTES_MODULE or (helpers.root .. "/spec/fixtures/notes")
local config_file = vim.env.NORGOPOLIS_CONFIG
local ws = helpers.tmp .. "/notes-ws"
local ws2 = helpers.tmp .. "/notes-ws2"
local MANY = 10000
-- Touched by the stand-in when a search has sent its last result.
local done_marker = helpers.tmp .. "/notes-search-done"
local stand_in = vim.env.NORGOPOLIS_NOTES_MODULE == nil

---@param path string
---@param lines string[]
local function write(path, lines)
  vim.fn.mkdir(vim.fn.fnamemodify(path, ":h"), "p")
  vim.fn.writefile(lines, path)
end

local function unload_notes()
  local err = helpers.await(norgopolis.unload, "notes")
  assert.is_nil(err)
end

--- Every result points into a file: workspace, absolute path, 1-based line.
---@param r table
---@param fields string[] further fields the function's results carry
local function assert_contract(r, fields)
  assert.is_string(r.workspace, vim.inspect(r))
  assert.is_string(r.path, vim.inspect(r))
  assert.is_true(vim.startswith(r.path, "/"), vim.inspect(r))
  assert.is_number(r.line, vim.inspect(r))
  assert.is_true(r.line >= 1 and r.line == math.floor(r.line), vim.inspect(r))
  for _, f in ipairs(fields) do
    assert.is_not_nil(r[f], f .. " in " .. vim.inspect(r))
  end
end

--- Calls a notes function and collects its results.
local function call(fn, args)
  local values, err = norgopolis.call_sync("notes", fn, args, { timeout = 15000 })
  assert.is_nil(err, vim.inspect(err))
  return values
end

--- Runs `start(opts)` with an `on_done` and waits for it.
---@return any err
---@return integer count
local function run_list(start)
  local done, e, n = false, nil, nil
  start({
    open = false,
    on_done = function(err, count)
      done, e, n = true, err, count
    end,
  })
  helpers.wait(30000, function()
    return done
  end, "the list to finish")
  return e, n
end

local ffi = require("ffi")
ffi.cdef([[
  typedef struct { long tv_sec; long tv_nsec; } np_timespec;
  int clock_gettime(int clk_id, np_timespec *tp);
]])
local CLOCK_THREAD_CPUTIME_ID = 3

--- CPU time of the calling (main) thread, in nanoseconds.
---@return number
local function thread_cpu()
  local ts = ffi.new("np_timespec")
  ffi.C.clock_gettime(CLOCK_THREAD_CPUTIME_ID, ts)
  return tonumber(ts.tv_sec) * 1e9 + tonumber(ts.tv_nsec)
end

---@return table[] the current quickfix list's entries
local function qf_items()
  return vim.fn.getqflist()
end

describe("norgopolis.notes", function()
  local restore
  local index, page, many

  setup(function()
    index = ws .. "/index.norg"
    page = ws .. "/sub/page.norg"
    many = ws .. "/many.norg"
    write(index, {
      "@document.meta",
      "title: The Index",
      "@end",
      "* Projects",
      "  See {:sub/page:} for the plan.",
      "  - ( ) write the meeting notes",
      "  - (x) book the room",
      "** Meeting",
      "  The meeting is on Monday.",
    })
    write(page, {
      "* Plan",
      "  Back to {:index:}.",
      "  - ( ) urgent-ish thing",
      "  - (_) dropped idea",
    })
    local lines = {}
    for i = 1, MANY do
      lines[i] = "needle " .. i
    end
    write(many, lines)
    write(ws2 .. "/other.norg", { "* Elsewhere", "  meeting elsewhere" })

    local table_lines = { "[modules.notes]", ('workspaces = { main = "%s" }'):format(ws) }
    if stand_in then
      -- Only the stand-in knows this key; the real module refuses unknown ones.
      table_lines[#table_lines + 1] = ('done_marker = "%s"'):format(done_marker)
    end
    restore = helpers.swap_notes(module_dir, table_lines)
    unload_notes()
  end)

  teardown(function()
    pcall(unload_notes)
    if restore then
      restore()
    end
    norgopolis.setup({})
  end)

  describe("the module's contract", function()
    it("search streams title, heading and snippet", function()
      local results = call("search", { query = "meeting" })
      assert.equals(3, #results)
      for _, r in ipairs(results) do
        assert_contract(r, { "title", "snippet" })
        assert.equals("main", r.workspace)
        assert.equals(index, r.path)
      end
      assert.same(
        { 6, 8, 9 },
        vim.tbl_map(function(r)
          return r.line
        end, results)
      )
      assert.equals("The Index", results[1].title)
      assert.equals("Meeting", results[3].heading)
      assert.equals(2, #call("search", { query = "meeting", limit = 2 }))
    end)

    it("backlinks, links, headings, tasks, files, stats", function()
      local back = call("backlinks", { path = page })
      assert.equals(1, #back)
      assert_contract(back[1], {})
      assert.same({ index, 5 }, { back[1].path, back[1].line })

      local links = call("links", { path = page })
      assert.equals(1, #links)
      assert_contract(links[1], { "target", "kind" })
      assert.equals(index, links[1].target)

      local heads = call("headings", { path = index })
      assert.same(
        { { 1, "Projects" }, { 2, "Meeting" } },
        vim.tbl_map(function(h)
          assert_contract(h, { "level", "text" })
          return { h.level, h.text }
        end, heads)
      )

      local tasks = call("tasks", { state = "undone" })
      assert.equals(2, #tasks)
      for _, t in ipairs(tasks) do
        assert_contract(t, { "state", "text" })
        assert.equals("undone", t.state)
      end
      assert.equals(4, #call("tasks", {}))

      local files = call("files", {})
      assert.equals(3, #files)
      for _, f in ipairs(files) do
        assert_contract(f, {})
      end
      assert.equals(1, #call("stats", vim.empty_dict()))
    end)
  end)

  describe("search()", function()
    it("offers results to vim.ui.select and opens the chosen one at its line", function()
      local real = vim.ui.select
      local offered, shown
      vim.ui.select = function(items, opts, on_choice)
        offered = items
        shown = vim.tbl_map(opts.format_item, items)
        on_choice(items[2])
      end
      local ok, err = pcall(function()
        local e, n = run_list(function(o)
          notes.search("meeting", { on_done = o.on_done })
        end)
        assert.is_nil(e)
        assert.equals(3, n)
      end)
      vim.ui.select = real
      assert(ok, err)
      assert.equals(3, #offered)
      assert.equals("The Index › Projects: - ( ) write the meeting notes", shown[1])
      assert.equals(index, vim.api.nvim_buf_get_name(0))
      assert.equals(8, vim.api.nvim_win_get_cursor(0)[1])
    end)

    it("fills the quickfix list with picker = 'quickfix'", function()
      local e, n = run_list(function(o)
        return notes.search(
          "meeting",
          { picker = "quickfix", limit = 2, open = o.open, on_done = o.on_done }
        )
      end)
      assert.is_nil(e)
      assert.equals(2, n)
      local items = qf_items()
      assert.equals(2, #items)
      assert.equals(index, vim.api.nvim_buf_get_name(items[1].bufnr))
      assert.equals(6, items[1].lnum)
      assert.equals('notes search "meeting"', vim.fn.getqflist({ title = 0 }).title)
    end)

    it("delivers 10,000 results in batches without stalling the main loop", function()
      -- A repeating timer on the main loop: the longest gap between its
      -- ticks is the longest the editor could not react. Counted in the
      -- main thread's CPU time (what our code spent), and in wall time
      -- (which includes waiting for a CPU on a loaded machine).
      local last, stall = thread_cpu(), 0
      local last_wall, stall_wall = vim.uv.hrtime(), 0
      local timer = assert(vim.uv.new_timer())
      timer:start(0, 2, function()
        local now, now_wall = thread_cpu(), vim.uv.hrtime()
        stall = math.max(stall, now - last)
        stall_wall = math.max(stall_wall, now_wall - last_wall)
        last, last_wall = now, now_wall
      end)
      -- What an idle second looks like on this machine, for comparison.
      vim.wait(1000, function()
        return false
      end, 5)
      local idle_stall = stall_wall
      last, stall, last_wall, stall_wall = thread_cpu(), 0, vim.uv.hrtime(), 0
      local real = vim.fn.setqflist
      local batches = {}
      rawset(vim.fn, "setqflist", function(list, action, what)
        if action == "a" then
          table.insert(batches, #what.items)
        end
        return real(list, action, what)
      end)
      local started = vim.uv.hrtime()
      os.remove(done_marker)
      local ok, e, n = pcall(run_list, function(o)
        local c =
          notes.search("needle", { picker = "quickfix", open = o.open, on_done = o.on_done })
        if stand_in then
          -- A busy editor: the loop is blocked until the module has sent
          -- everything, so the results pile up and arrive at once.
          local deadline = vim.uv.hrtime() + 30e9
          while not vim.uv.fs_stat(done_marker) do
            assert(vim.uv.hrtime() < deadline, "the stand-in never finished its search")
            vim.uv.sleep(5)
          end
          last, stall, last_wall, stall_wall = thread_cpu(), 0, vim.uv.hrtime(), 0
        end
        return c
      end)
      local total = vim.uv.hrtime() - started
      timer:stop()
      timer:close()
      rawset(vim.fn, "setqflist", nil)
      assert(ok, e)
      assert.is_nil(e)
      assert.equals(MANY, n)
      assert.equals(MANY, #qf_items())
      assert.is_true(#batches >= MANY / 1000, vim.inspect(batches))
      for _, size in ipairs(batches) do
        assert.is_true(size <= 1000, vim.inspect(batches))
      end
      -- Handing the piled-up stream over in one turn took 250-280 ms of
      -- CPU (debug build); a turn of one batch takes about 10 ms.
      assert.is_true(stall < 100e6, ("stall %.1f ms of CPU"):format(stall / 1e6))
      io.stdout:write(
        ("\n[notes] %d results in %d batches, %.0f ms in all; longest main-loop stall %.1f ms CPU, %.1f ms wall (idle: %.1f ms wall)\n"):format(
          n,
          #batches,
          total / 1e6,
          stall / 1e6,
          stall_wall / 1e6,
          idle_stall / 1e6
        )
      )
    end)

    it("refuses bad arguments with a clear error", function()
      assert.has_error(function()
        notes.search("")
      end, 'norgopolis.notes.search: query must be a non-empty string, got ""')
      assert.has_error(function()
        notes.search("x", { picker = "telescope" })
      end, 'norgopolis.notes.search: picker must be "select" or "quickfix", got "telescope"')
      assert.has_error(function()
        notes.search("x", { limit = 0 })
      end, "norgopolis.notes.search: limit must be a positive whole number, got 0")
      assert.has_error(function()
        notes.search("x", { limt = 3 })
      end, 'norgopolis.notes.search: unknown option "limt"')
      assert.has_error(function()
        notes.tasks({ state = "finished" })
      end)
    end)

    it("reports the module's errors", function()
      local e = run_list(function(o)
        return notes.search("x", { workspace = "nope", on_done = o.on_done })
      end)
      assert.equals("NotFound", e.code)
    end)
  end)

  describe("backlinks() and tasks()", function()
    it("backlinks default to the current buffer's file", function()
      vim.cmd.edit(vim.fn.fnameescape(page))
      local e, n = run_list(function(o)
        return notes.backlinks(nil, o)
      end)
      assert.is_nil(e)
      assert.equals(1, n)
      local items = qf_items()
      assert.equals(index, vim.api.nvim_buf_get_name(items[1].bufnr))
      assert.equals(5, items[1].lnum)
      assert.equals("See {:sub/page:} for the plan.", items[1].text)
    end)

    it("tasks go to the quickfix list, filtered by state", function()
      local e, n = run_list(function(o)
        return notes.tasks({ state = "cancelled", open = o.open, on_done = o.on_done })
      end)
      assert.is_nil(e)
      assert.equals(1, n)
      assert.equals("(cancelled) dropped idea", qf_items()[1].text)
      assert.equals(4, qf_items()[1].lnum)
    end)
  end)

  describe(":Norgopolis notes", function()
    local function complete(line)
      return vim.fn.getcompletion(line, "cmdline")
    end

    it("completes subcommands, flags and states", function()
      assert.is_true(vim.tbl_contains(complete("Norgopolis "), "notes"))
      assert.same({ "backlinks", "search", "tasks" }, complete("Norgopolis notes "))
      assert.same({ "tasks" }, complete("Norgopolis notes t"))
      assert.same(
        { "--limit", "--quickfix", "--workspace" },
        complete("Norgopolis notes search --")
      )
      assert.same({ "undone", "uncertain", "urgent" }, complete("Norgopolis notes tasks u"))
      assert.same({ "on_hold" }, complete("Norgopolis notes tasks --state o"))
    end)

    it("runs tasks and search into the quickfix list", function()
      vim.fn.setqflist({}, "f")
      vim.cmd("Norgopolis notes tasks done")
      helpers.wait(15000, function()
        return #qf_items() == 1
      end, "the done task")
      assert.equals("(done) book the room", qf_items()[1].text)

      vim.cmd("Norgopolis notes search --quickfix --limit 1 meeting")
      helpers.wait(15000, function()
        return vim.fn.getqflist({ title = 0 }).title == 'notes search "meeting"'
          and #qf_items() == 1
      end, "the search")
    end)

    it("explains bad input", function()
      local msgs = helpers.capture_notify(function()
        vim.cmd("Norgopolis notes tasks finished")
      end, function(m)
        return #m > 0
      end)
      assert.matches("unknown state", msgs[1].msg)
      msgs = helpers.capture_notify(function()
        vim.cmd("Norgopolis notes search --limit x y")
      end, function(m)
        return #m > 0
      end)
      assert.matches("%-%-limit needs a positive whole number", msgs[1].msg)
    end)
  end)

  describe("module configuration", function()
    it("an edit of config.toml applies at :Norgopolis restart notes", function()
      vim.fn.writefile({
        "[modules.notes]",
        ('workspaces = { second = "%s" }'):format(ws2),
      }, config_file)
      -- The running module keeps what it started with.
      assert.equals("main", call("search", { query = "meeting" })[1].workspace)
      helpers.capture_notify(function()
        vim.cmd("Norgopolis restart notes")
      end, function(m)
        return #m > 0 and m[1].msg:match("^restarted notes")
      end)
      local results = call("search", { query = "meeting" })
      assert.equals(1, #results)
      assert.equals("second", results[1].workspace)
    end)

    it(
      "setup({ modules }) reaches a server this Neovim starts and wins over config.toml",
      function()
        norgopolis.setup({ modules = { notes = { workspaces = { second = ws } } } })
        helpers.capture_notify(function()
          vim.cmd("Norgopolis restart")
        end, function(m)
          return #m > 0 and m[1].msg:match("^server restarted")
        end)
        -- config.toml names `second` as ws2; setup's value for the key wins.
        local results = call("search", { query = "meeting" })
        assert.equals(3, #results)
        assert.equals("second", results[1].workspace)
        assert.equals(index, results[1].path)
      end
    )

    it(":checkhealth says whether the running server has this Neovim's modules option", function()
      local function health()
        vim.cmd("checkhealth norgopolis")
        local text = table.concat(vim.api.nvim_buf_get_lines(0, 0, -1, false), "\n")
        vim.cmd("bwipeout!")
        return text
      end
      -- The server of the test before was started with this setup.
      local out = health()
      assert.matches("the `modules` option configures: notes", out, nil, true)
      assert.matches(
        "the running server was started with this Neovim's `modules` option",
        out,
        nil,
        true
      )
      norgopolis.setup({ modules = { notes = { workspaces = { main = ws2 } } } })
      out = health()
      assert.matches("another module configuration for: notes", out, nil, true)
      assert.matches("`:Norgopolis restart` starts one with this Neovim's settings", out, nil, true)
    end)
  end)
end)
