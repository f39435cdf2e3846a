-- The Neovim `make nvim` opens: --clean (no user config), the repository on
-- 'runtimepath', scripts/nvim-try.lua sourced. Driven headless here.
local helpers = require("helpers")

describe("make nvim's session (scripts/nvim-try.lua)", function()
  it("defines :Norgopolis, shows the try buffer and runs its lines", function()
    local script = [[
      local out = {}
      local function say(s) table.insert(out, s) end
      say("command " .. vim.fn.exists(":Norgopolis"))
      say("buffer " .. vim.api.nvim_buf_get_name(0))
      local msgs = {}
      vim.notify = function(msg) table.insert(msgs, msg) end
      local function run_line(pattern)
        local lines = vim.api.nvim_buf_get_lines(0, 0, -1, false)
        for i, l in ipairs(lines) do
          if l:match(pattern) then
            vim.api.nvim_win_set_cursor(0, { i, 0 })
            vim.api.nvim_feedkeys(vim.keycode("<CR>"), "x", false)
            return
          end
        end
        say("no line matches " .. pattern)
      end
      run_line("^:Norgopolis call echo echo")
      vim.wait(15000, function()
        return vim.iter(msgs):any(function(m) return m:match("echo%.echo") end)
      end)
      run_line("publish%(")
      vim.wait(15000, function()
        return vim.iter(msgs):any(function(m) return m:match("^event notes/note%.saved") end)
      end)
      for _, m in ipairs(msgs) do say("msg " .. m) end
      local done = false
      require("norgopolis").shutdown(function() done = true end)
      vim.wait(5000, function() return done end)
      io.stdout:write(table.concat(out, "\n") .. "\n")
      vim.cmd("qa!")
    ]]
    local file = helpers.tmp .. "/try-child.lua"
    vim.fn.writefile(vim.split(script, "\n"), file)
    local res = vim
      .system({
        vim.v.progpath,
        "--clean",
        "--headless",
        "--cmd",
        "set rtp^=" .. helpers.root,
        "-S",
        helpers.root .. "/scripts/nvim-try.lua",
        "-c",
        "luafile " .. file,
      }, {
        text = true,
        env = { NORGOPOLIS_SOCKET = helpers.tmp .. "/sock/try.sock" },
      })
      :wait(60000)
    assert.equal(0, res.code, res.stdout .. res.stderr)
    assert.matches("command 2", res.stdout)
    assert.matches("buffer norgopolis://try", res.stdout)
    assert.matches('msg echo%.echo %-> {%s*hello = "world"%s*}', res.stdout)
    assert.matches('msg event notes/note%.saved: { file = "inbox%.norg" }', res.stdout)
  end)
end)
