-- scripts/demo-nvim.sh tells the story it claims to (and keeps working).
local helpers = require("helpers")

describe("scripts/demo-nvim.sh", function()
  it("runs the two-Neovim story end to end", function()
    local res = vim
      .system({ "bash", helpers.root .. "/scripts/demo-nvim.sh" }, {
        text = true,
        -- Its own isolated socket and log; ours must not leak into it.
        env = { NVIM = vim.v.progpath, NORGOPOLIS_SOCKET = "", NORGOPOLIS_LOG = "" },
      })
      :wait(120000)
    local out = res.stdout .. res.stderr
    assert.equal(0, res.code, out)
    local pid_a = out:match("%[nvim A%] attached: server pid (%d+)")
    local pid_b = out:match("%[nvim B%] attached: server pid (%d+)")
    assert.is_not_nil(pid_a, out)
    assert.equal(pid_a, pid_b)
    local items = {}
    for v in out:gmatch("%[nvim A%] [%d:.]+  on_value%((%d)%)") do
      table.insert(items, tonumber(v))
    end
    assert.same({ 0, 1, 2, 3, 4 }, items)
    assert.matches("on%(module%.loaded%): echo started", out)
    assert.matches("%[nvim B%] User NorgopolisEvent: module=notes topic=note%.saved", out)
    assert.matches('err = { code = "NotFound", message = "no note called inbox%.norg" }', out)
    assert.matches("nvim A exited cleanly %(status 0%)", out)
    assert.matches("server " .. pid_a .. " still running%? yes", out)
    assert.matches('%[nvim B%] call echo%.echo %-> { { from = "nvim B" } }', out)
    assert.matches(
      "%[nvim B%] server pid " .. pid_a .. ": 1 session%(s%), 0 call%(s%) in flight",
      out
    )
    assert.matches("server " .. pid_a .. " exited %d+ ms after the last Neovim quit", out)
    assert.matches("socket removed", out)
  end)
end)
