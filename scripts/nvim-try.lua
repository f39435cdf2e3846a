-- Sourced by `make nvim` (nvim --clean --cmd "set rtp^=ROOT" -S scripts/nvim-try.lua):
-- a scratch buffer with things to try, and every server event shown as a
-- message so the event feed is visible while you play.

local lines = {
  "# norgopolis: try it",
  "",
  "The first call starts a server on "
    .. (vim.env.NORGOPOLIS_SOCKET or "the default socket")
    .. ",",
  "with the bundled modules from "
    .. (vim.env.NORGOPOLIS_MODULES_DIR or "the default modules dir")
    .. ".",
  "Server events appear as messages (see :messages). This buffer is scratch: :q to leave.",
  "",
  "## Commands (put the cursor on one and press <Enter>)",
  "",
  ":Norgopolis status",
  ':Norgopolis call echo echo {"hello": "world"}',
  ':Norgopolis call echo count {"n": 5, "delay_ms": 300}',
  ':Norgopolis call echo fail {"code": "NotFound", "message": "no note called inbox.norg"}',
  ":Norgopolis call echo crash 3",
  ":Norgopolis modules",
  ":Norgopolis log",
  ":checkhealth norgopolis",
  "",
  "## Lua (cursor on a line, then <Enter>)",
  "",
  'require("norgopolis").invoke("echo", "count", { n = 5, delay_ms = 300 }, { on_value = print, on_done = function(err) print("done", vim.inspect(err)) end })',
  'print(vim.inspect(require("norgopolis").call_sync("echo", "echo", { a = { 1, 2, vim.NIL } })))',
  'require("norgopolis").publish("notes", "note.saved", { file = "inbox.norg" })',
  "",
  "Completion works for :Norgopolis <Tab> (subcommands, modules, functions, paths for install).",
}

local buf = vim.api.nvim_create_buf(true, true)
vim.api.nvim_buf_set_name(buf, "norgopolis://try")
vim.api.nvim_buf_set_lines(buf, 0, -1, false, lines)
vim.bo[buf].filetype = "markdown"
vim.bo[buf].modifiable = false
vim.api.nvim_set_current_buf(buf)

--- Runs the line under the cursor: an Ex command if it starts with ":",
--- Lua if it looks like a call into norgopolis or print.
vim.keymap.set("n", "<CR>", function()
  local line = vim.api.nvim_get_current_line()
  if line:match("^:") then
    vim.cmd(line:sub(2))
  elseif line:match("^require%(") or line:match("^print%(") then
    local chunk, err = loadstring(line, "=try")
    if not chunk then
      return vim.notify(err, vim.log.levels.ERROR)
    end
    local ok, run_err = pcall(chunk)
    if not ok then
      vim.notify(tostring(run_err), vim.log.levels.ERROR)
    end
  end
end, { buffer = buf, desc = "norgopolis: run this line" })

vim.api.nvim_create_autocmd("User", {
  pattern = "NorgopolisEvent",
  callback = function(ev)
    local d = ev.data
    vim.notify(
      ("event %s/%s: %s"):format(
        d.module,
        d.topic,
        vim.inspect(d.payload, { newline = " ", indent = "" })
      ),
      vim.log.levels.INFO
    )
  end,
})
