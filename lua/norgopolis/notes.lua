---@mod norgopolis.notes The notes index in Neovim
---
--- Front end of the `notes` module (a database over the `.norg` files of
--- the configured workspaces). Every function is asynchronous and returns
--- the running `norgopolis.Call` (`:cancel()` stops it). Results stream in;
--- lists go to the quickfix list in batches, each appended on a later turn
--- of the main loop, so even 10,000 results never block the editor.
---
--- ```lua
--- local notes = require("norgopolis.notes")
--- notes.search("meeting", { limit = 50 })            -- pick one with vim.ui.select
--- notes.search("todo", { picker = "quickfix" })
--- notes.backlinks()                                  -- links to the current file
--- notes.tasks({ state = "undone", workspace = "work" })
--- ```

local M = {}

--- The module these functions call.
local MODULE = "notes"

--- Quickfix entries appended per turn of the main loop.
local BATCH = 1000

--- Task states, as the notes module names them.
M.task_states =
  { "undone", "done", "uncertain", "urgent", "recurring", "pending", "on_hold", "cancelled" }

---@class norgopolis.notes.Result
---@field workspace string the workspace the file belongs to
---@field path string absolute path of the file
---@field line integer 1-based line the result points at
---@field title? string search: the document's title
---@field heading? string search: the heading the match is under
---@field snippet? string search: the matching text; backlinks: the linking line
---@field state? string tasks: the task's state (`M.task_states`)
---@field text? string tasks: the task's text

---@class norgopolis.notes.ListOpts
---@field open? boolean open the quickfix window at the first batch (default true)
---@field on_done? fun(err: norgopolis.Error?, count: integer) runs once the last batch is in the list (or the call failed)

---@class norgopolis.notes.SearchOpts: norgopolis.notes.ListOpts
---@field limit? integer most results the module returns
---@field workspace? string search this workspace only
---@field picker? "select"|"quickfix" where results go (default "select": `vim.ui.select`, jumping to the chosen one)

---@class norgopolis.notes.TasksOpts: norgopolis.notes.ListOpts
---@field state? string only tasks in this state (`M.task_states`)
---@field workspace? string only tasks of this workspace

---@param msg string
---@param level? integer
local function notify(msg, level)
  require("norgopolis.core").notify("notes: " .. msg, level)
end

---@param what string
---@param err norgopolis.Error
local function report(what, err)
  notify(("%s failed: %s: %s"):format(what, err.code, err.message), vim.log.levels.ERROR)
end

--- Raises the caller's argument error.
---@param fname string
---@param msg string
local function bad_arg(fname, msg)
  error(("norgopolis.notes.%s: %s"):format(fname, msg), 3)
end

---@param fname string
---@param opts any
---@param known table<string, true>
---@return table
local function check_opts(fname, opts, known)
  if opts == nil then
    return {}
  end
  if type(opts) ~= "table" then
    bad_arg(fname, "opts must be a table, got " .. type(opts))
  end
  for k in pairs(opts) do
    if not known[k] then
      bad_arg(fname, ("unknown option %s"):format(vim.inspect(k)))
    end
  end
  if opts.on_done ~= nil and not vim.is_callable(opts.on_done) then
    bad_arg(fname, "on_done must be a function")
  end
  if opts.workspace ~= nil and (type(opts.workspace) ~= "string" or opts.workspace == "") then
    bad_arg(fname, "workspace must be a non-empty string, got " .. vim.inspect(opts.workspace))
  end
  return opts
end

--- Whether `r` is a result that points into a file.
---@param r any
---@return boolean
local function is_result(r)
  return type(r) == "table" and type(r.path) == "string" and r.path ~= ""
end

---@param r norgopolis.notes.Result
---@return integer
local function line_of(r)
  return type(r.line) == "number" and math.max(1, math.floor(r.line)) or 1
end

--- Opens the file a result points at, on its line.
---@param r norgopolis.notes.Result
function M.jump(r)
  vim.cmd.edit(vim.fn.fnameescape(r.path))
  local last = vim.api.nvim_buf_line_count(0)
  pcall(vim.api.nvim_win_set_cursor, 0, { math.min(line_of(r), last), 0 })
end

--- The line shown for a search result.
---@param r norgopolis.notes.Result
---@return string
function M.describe_match(r)
  local where = r.title or vim.fn.fnamemodify(r.path, ":t")
  if r.heading and r.heading ~= vim.NIL then
    where = where .. " › " .. tostring(r.heading)
  end
  local snippet = (r.snippet and r.snippet ~= vim.NIL) and tostring(r.snippet) or ""
  return snippet ~= "" and (tostring(where) .. ": " .. snippet) or tostring(where)
end

--- The line shown for a task.
---@param r norgopolis.notes.Result
---@return string
function M.describe_task(r)
  return ("(%s) %s"):format(tostring(r.state), tostring(r.text or ""))
end

--- The line shown for a backlink: the linking text when the module sends it.
---@param r norgopolis.notes.Result
---@return string
local function describe_link(r)
  local text = r.snippet or r.text or r.title
  return (text and text ~= vim.NIL) and tostring(text) or ""
end

--- Streams `fn(args)` of the notes module into a new quickfix list titled
--- `title`, `describe(result)` giving each entry's text. Entries are
--- appended `BATCH` at a time, one batch per scheduled callback.
---@param fn string
---@param args table
---@param title string
---@param describe fun(r: norgopolis.notes.Result): string
---@param opts norgopolis.notes.ListOpts
---@return norgopolis.Call
local function to_quickfix(fn, args, title, describe, opts)
  vim.fn.setqflist({}, " ", { title = title, items = {} })
  local qf = vim.fn.getqflist({ id = 0 }).id
  local pending, head, count, skipped = {}, 1, 0, 0
  local scheduled, done, opened, stopped = false, nil, false, false
  local call

  local function finish()
    local err = done and done.err
    if err then
      report(title, err)
    elseif count == 0 then
      notify(title .. ": nothing found")
    end
    if skipped > 0 then
      notify(
        ("%s: %d results without a file were left out"):format(title, skipped),
        vim.log.levels.WARN
      )
    end
    if opts.on_done then
      opts.on_done(err, count)
    end
  end

  local function flush()
    local last = math.min(#pending, head + BATCH - 1)
    if last >= head then
      -- The list may be gone (older lists are dropped past 10): stop.
      local items = vim.list_slice(pending, head, last)
      if vim.fn.setqflist({}, "a", { id = qf, items = items }) ~= 0 then
        stopped = true
        pending, head, scheduled = {}, 1, false
        call:cancel()
        if done then
          finish()
        end
        return
      end
      count = count + #items
      head = last + 1
      if not opened and opts.open ~= false then
        opened = true
        vim.cmd("botright copen")
        vim.cmd("wincmd p")
      end
    end
    if head <= #pending then
      vim.schedule(flush) -- the rest on a later turn: keys are handled in between
      return
    end
    pending, head, scheduled = {}, 1, false
    if done then
      finish()
    end
  end

  local function kick()
    if not scheduled then
      scheduled = true
      vim.schedule(flush)
    end
  end

  call = require("norgopolis").invoke(MODULE, fn, args, {
    on_value = function(r)
      if is_result(r) then
        pending[#pending + 1] = { filename = r.path, lnum = line_of(r), text = describe(r) }
        kick()
      else
        skipped = skipped + 1
      end
    end,
    on_done = function(err)
      -- Stopped because the list is gone: nothing to report.
      done = { err = not stopped and err or nil }
      kick()
    end,
  })
  return call
end

local search_opts = { limit = true, workspace = true, picker = true, open = true, on_done = true }

--- Searches the notes: results (with `title`, `heading`, `snippet`) go to
--- `vim.ui.select` (choosing one opens it at its line) or, with `picker =
--- "quickfix"`, to a new quickfix list in batches.
---@param query string
---@param opts? norgopolis.notes.SearchOpts
---@return norgopolis.Call
function M.search(query, opts)
  if type(query) ~= "string" or not query:find("%S") then
    bad_arg("search", "query must be a non-empty string, got " .. vim.inspect(query))
  end
  opts = check_opts("search", opts, search_opts)
  local limit = opts.limit
  if limit ~= nil and (type(limit) ~= "number" or limit < 1 or limit ~= math.floor(limit)) then
    bad_arg("search", "limit must be a positive whole number, got " .. vim.inspect(limit))
  end
  local picker = opts.picker or "select"
  if picker ~= "select" and picker ~= "quickfix" then
    bad_arg("search", ('picker must be "select" or "quickfix", got %s'):format(vim.inspect(picker)))
  end
  local args = { query = query, limit = limit, workspace = opts.workspace }
  local title = ("notes search %q"):format(query)
  if picker == "quickfix" then
    return to_quickfix("search", args, title, M.describe_match, opts)
  end
  local results = {}
  return require("norgopolis").invoke(MODULE, "search", args, {
    on_value = function(r)
      if is_result(r) then
        results[#results + 1] = r
      end
    end,
    on_done = function(err)
      if err then
        report(title, err)
      elseif #results == 0 then
        notify(title .. ": nothing found")
      else
        vim.ui.select(results, {
          prompt = title,
          kind = "norgopolis.notes",
          format_item = M.describe_match,
        }, function(choice)
          if choice then
            M.jump(choice)
          end
        end)
      end
      if opts.on_done then
        opts.on_done(err, #results)
      end
    end,
  })
end

local list_opts = { open = true, on_done = true }

--- Lists the places that link to `path` (default: the current buffer's
--- file) in a new quickfix list.
---@param path? string
---@param opts? norgopolis.notes.ListOpts
---@return norgopolis.Call?
function M.backlinks(path, opts)
  opts = check_opts("backlinks", opts, list_opts)
  if path ~= nil and (type(path) ~= "string" or path == "") then
    bad_arg("backlinks", "path must be a non-empty string, got " .. vim.inspect(path))
  end
  path = path or vim.api.nvim_buf_get_name(0)
  if path == "" then
    notify("backlinks: the current buffer has no file", vim.log.levels.ERROR)
    if opts.on_done then
      opts.on_done({ code = "InvalidArgument", message = "no file" }, 0)
    end
    return nil
  end
  path = vim.fn.fnamemodify(path, ":p")
  local title = "notes backlinks " .. vim.fn.fnamemodify(path, ":~:.")
  return to_quickfix("backlinks", { path = path }, title, describe_link, opts)
end

local tasks_opts = { state = true, workspace = true, open = true, on_done = true }

--- Lists tasks (optionally of one `state` and `workspace`) in a new
--- quickfix list.
---@param opts? norgopolis.notes.TasksOpts
---@return norgopolis.Call
function M.tasks(opts)
  opts = check_opts("tasks", opts, tasks_opts)
  if opts.state ~= nil and not vim.tbl_contains(M.task_states, opts.state) then
    bad_arg(
      "tasks",
      ("state must be one of %s, got %s"):format(
        table.concat(M.task_states, ", "),
        vim.inspect(opts.state)
      )
    )
  end
  local title = "notes tasks" .. (opts.state and (" " .. opts.state) or "")
  return to_quickfix(
    "tasks",
    { state = opts.state, workspace = opts.workspace },
    title,
    M.describe_task,
    opts
  )
end

-- :Norgopolis notes ------------------------------------------------------------

local usage = {
  search = "search [--quickfix] [--limit N] [--workspace NAME] {query}",
  backlinks = "backlinks [path]",
  tasks = "tasks [state] [--workspace NAME]",
}

--- Splits `--flag value` pairs (and bare `--quickfix`) from the words.
---@param args string[]
---@param takes_value table<string, true>
---@return table<string, string|true>? flags
---@return string[]|string words_or_err
local function parse_flags(args, takes_value)
  local flags, words = {}, {}
  local i = 1
  while i <= #args do
    local a = args[i]
    local name = a:match("^%-%-(.+)$")
    if name and takes_value[name] then
      if not args[i + 1] then
        return nil, ("--%s needs a value"):format(name)
      end
      flags[name] = args[i + 1]
      i = i + 1
    elseif name and takes_value[name] == false then
      flags[name] = true
    elseif name then
      return nil, ("unknown flag %s"):format(a)
    else
      words[#words + 1] = a
    end
    i = i + 1
  end
  return flags, words
end

--- Runs `:Norgopolis notes {args}`.
---@param args string[] the words after "notes"
function M.command(args)
  local sub = args[1]
  local rest = vim.list_slice(args, 2)
  local function fail(msg)
    notify(
      ("%s; usage: :Norgopolis notes %s"):format(
        msg,
        usage[sub] or table.concat(vim.tbl_values(usage), " | ")
      ),
      vim.log.levels.ERROR
    )
  end
  if sub == "search" then
    local flags, words = parse_flags(rest, { limit = true, workspace = true, quickfix = false })
    if not flags then
      return fail(words --[[@as string]])
    end
    local limit = flags.limit and tonumber(flags.limit)
    if flags.limit and (not limit or limit < 1 or limit ~= math.floor(limit)) then
      return fail("--limit needs a positive whole number")
    end
    if #words == 0 then
      return fail("no query")
    end
    M.search(table.concat(words --[[@as string[] ]], " "), {
      limit = limit,
      workspace = flags.workspace --[[@as string?]],
      picker = flags.quickfix and "quickfix" or "select",
    })
  elseif sub == "backlinks" then
    if #rest > 1 then
      return fail("one path at most")
    end
    M.backlinks(rest[1] and vim.fn.expand(rest[1]) or nil)
  elseif sub == "tasks" then
    local flags, words = parse_flags(rest, { workspace = true, state = true })
    if not flags then
      return fail(words --[[@as string]])
    end
    local state = flags.state or words[1]
    if #words > (flags.state and 0 or 1) then
      return fail("too many words")
    end
    if state and not vim.tbl_contains(M.task_states, state) then
      return fail(("unknown state %q (%s)"):format(state, table.concat(M.task_states, ", ")))
    end
    M.tasks({
      state = state --[[@as string?]],
      workspace = flags.workspace --[[@as string?]],
    })
  else
    fail(sub and ("unknown notes command %q"):format(sub) or "which notes command?")
  end
end

--- Completes `:Norgopolis notes {args}`.
---@param lead string the word being completed
---@param args string[] the words after "notes", the last being `lead`
---@return string[]
function M.complete(lead, args)
  local filter = require("norgopolis.complete").filter
  if #args <= 1 then
    return filter({ "backlinks", "search", "tasks" }, lead)
  end
  local sub, before = args[1], args[#args - 1]
  if before == "--limit" or before == "--workspace" then
    return {}
  elseif before == "--state" then
    return filter(M.task_states, lead)
  elseif sub == "search" then
    return lead:match("^%-") and filter({ "--limit", "--quickfix", "--workspace" }, lead) or {}
  elseif sub == "tasks" then
    if lead:match("^%-") then
      return filter({ "--state", "--workspace" }, lead)
    end
    return #args == 2 and filter(M.task_states, lead) or {}
  elseif sub == "backlinks" then
    return #args == 2 and vim.fn.getcompletion(lead, "file") or {}
  end
  return {}
end

return M
