---@mod norgopolis.ui Showing server state to the user

local M = {}

--- "1h 2m 3s" from milliseconds.
---@param ms number
---@return string
function M.duration(ms)
  local s = math.floor((ms or 0) / 1000)
  local h, m = math.floor(s / 3600), math.floor(s % 3600 / 60)
  s = s % 60
  if h > 0 then
    return ("%dh %dm %ds"):format(h, m, s)
  elseif m > 0 then
    return ("%dm %ds"):format(m, s)
  end
  return ("%ds"):format(s)
end

--- Lines describing a `status()` reply.
---@param st table
---@return string[]
function M.status_lines(st)
  local lines = {
    ("norgopolis-server %s, pid %d, up %s"):format(st.version, st.pid, M.duration(st.uptime_ms)),
    ("sessions: %d, calls in flight: %d"):format(st.sessions, st.calls_in_flight),
    "socket: " .. st.socket,
    "log: " .. st.log_path,
    "modules dirs: " .. (#st.modules_dirs > 0 and table.concat(st.modules_dirs, ", ") or "(none)"),
  }
  if #st.modules == 0 then
    table.insert(lines, "modules: none loaded")
  else
    table.insert(lines, "modules:")
    local width = 0
    for _, m in ipairs(st.modules) do
      width = math.max(width, #m.name)
    end
    for _, m in ipairs(st.modules) do
      local line = ("  %-" .. width .. "s  pid %-7d %-9s calls %d (%d in flight), up %s"):format(
        m.name,
        m.pid,
        m.state,
        m.calls_served,
        m.calls_in_flight,
        M.duration(m.uptime_ms)
      )
      if m.restarts > 0 then
        line = line .. (", %d restarts"):format(m.restarts)
      end
      if (m.calls_queued or 0) > 0 then
        line = line .. (", %d queued"):format(m.calls_queued)
      end
      if m.last_exit ~= "" then
        line = line .. ", last exit: " .. m.last_exit
      end
      if (m.failure or "") ~= "" then
        line = line .. ", failed: " .. m.failure
      end
      table.insert(lines, line)
    end
  end
  if #(st.recent_failures or {}) > 0 then
    table.insert(lines, "recent module failures:")
    for _, f in ipairs(st.recent_failures) do
      table.insert(
        lines,
        ("  %s  %s (pid %d): %s"):format(
          os.date("%H:%M:%S", math.floor(f.at_unix_ms / 1000)),
          f.module,
          f.pid,
          f.reason
        )
      )
    end
  end
  return lines
end

--- Lines describing a `modules()` reply.
---@param reply table
---@return string[]
function M.modules_lines(reply)
  local lines = {}
  if #reply.modules == 0 then
    table.insert(lines, "no modules found in " .. table.concat(reply.dirs, ", "))
  end
  for _, m in ipairs(reply.modules) do
    local line = ("%s %s%s"):format(
      m.loaded and "*" or " ",
      m.name,
      m.version ~= "" and (" " .. m.version) or ""
    )
    if m.description ~= "" then
      line = line .. " - " .. m.description
    end
    if #m.functions > 0 then
      line = line .. " [" .. table.concat(m.functions, ", ") .. "]"
    end
    if m.error ~= "" then
      line = line .. " (error: " .. m.error .. ")"
    end
    table.insert(lines, line)
  end
  table.insert(lines, "(* = loaded)  dirs: " .. table.concat(reply.dirs, ", "))
  return lines
end

--- Opens a closable floating window with `lines`.
---@param lines string[]
---@param title string
---@return integer win
function M.float(lines, title)
  local buf = vim.api.nvim_create_buf(false, true)
  vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
  vim.bo[buf].modifiable = false
  vim.bo[buf].bufhidden = "wipe"
  local width = #title + 4
  for _, l in ipairs(lines) do
    width = math.max(width, vim.fn.strdisplaywidth(l))
  end
  width = math.min(width + 2, math.max(20, vim.o.columns - 4))
  local height = math.min(#lines, math.max(1, vim.o.lines - 4))
  local win = vim.api.nvim_open_win(buf, true, {
    relative = "editor",
    width = width,
    height = height,
    row = math.floor((vim.o.lines - height) / 2),
    col = math.floor((vim.o.columns - width) / 2),
    style = "minimal",
    border = "rounded",
    title = " " .. title .. " ",
    title_pos = "center",
  })
  for _, key in ipairs({ "q", "<Esc>" }) do
    vim.keymap.set("n", key, "<cmd>close<cr>", { buffer = buf, nowait = true, silent = true })
  end
  return win
end

--- Shows lines in a float when there is a UI, as a message otherwise
--- (headless sessions and scripts).
---@param lines string[]
---@param title string
function M.show(lines, title)
  if #vim.api.nvim_list_uis() > 0 then
    M.float(lines, title)
  else
    require("norgopolis.core").notify(title .. "\n" .. table.concat(lines, "\n"))
  end
end

return M
