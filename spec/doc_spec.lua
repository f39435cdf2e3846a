-- doc/norgopolis.txt against the code: every public function (with its
-- parameters as annotated), type field, option, command and event has its
-- help tag, and :help finds them once :helptags ran.
local helpers = require("helpers")

local doc_file = helpers.root .. "/doc/norgopolis.txt"
local doc = table.concat(vim.fn.readfile(doc_file), "\n")

--- Public functions of init.lua: { tag, signature }.
---@return { tag: string, signature: string }[]
local function functions()
  local found = {}
  for _, line in ipairs(vim.fn.readfile(helpers.root .. "/lua/norgopolis/init.lua")) do
    local owner, name, params = line:match("^function (%a+)[.:]([%w_]+)%(([^)]*)%)")
    if owner then
      local args = vim.tbl_map(function(p)
        return "{" .. p .. "}"
      end, vim.split(params, "%s*,%s*", { trimempty = true }))
      local call = ("%s(%s)"):format(name, table.concat(args, ", "))
      if owner == "M" then
        table.insert(
          found,
          { tag = "norgopolis." .. name .. "()", signature = "norgopolis." .. call }
        )
      else
        table.insert(found, {
          tag = "norgopolis." .. owner .. ":" .. name .. "()",
          signature = owner .. ":" .. call,
        })
      end
    end
  end
  return found
end

--- The documented classes' fields from the LuaCATS annotations:
--- class -> { { name, type } }.
---@return table<string, { name: string, type: string }[]>
local function classes()
  local documented = {
    ["norgopolis.Error"] = true,
    ["norgopolis.Call"] = true,
    ["norgopolis.InvokeOpts"] = true,
    ["norgopolis.CallSyncOpts"] = true,
    ["norgopolis.StatusOpts"] = true,
    ["norgopolis.OnOpts"] = true,
    ["norgopolis.Provider"] = true,
    ["norgopolis.ProvideOpts"] = true,
    ["norgopolis.InstallOpts"] = true,
    ["norgopolis.Installed"] = true,
    ["norgopolis.Event"] = true,
    ["norgopolis.Config"] = true,
  }
  local found = {}
  for name in vim.fs.dir(helpers.root .. "/lua/norgopolis") do
    local class
    for _, line in ipairs(vim.fn.readfile(helpers.root .. "/lua/norgopolis/" .. name)) do
      class = line:match("^%-%-%-@class ([%w.]+)") or (line:match("^%-%-%-@field") and class)
      local field, ty = line:match("^%-%-%-@field ([%w_]+)%??%s+(%S+)")
      if class and field and documented[class] then
        -- a function type runs to its closing parenthesis
        if ty:match("^fun%(") then
          ty = line:match("^%-%-%-@field [%w_]+%??%s+(fun%b())")
        end
        found[class] = found[class] or {}
        table.insert(found[class], { name = field, type = (ty:gsub("%?$", "")) })
      end
    end
  end
  return found
end

describe("doc/norgopolis.txt", function()
  it("documents every public function with its parameters", function()
    local fns = functions()
    assert.is_true(#fns > 15)
    for _, f in ipairs(fns) do
      assert.is_truthy(doc:find("*" .. f.tag .. "*", 1, true), "no tag *" .. f.tag .. "*")
      assert.is_truthy(doc:find("\n" .. f.signature .. "\n", 1, true), "no line " .. f.signature)
    end
  end)

  it("has no function tag for a function that does not exist", function()
    local known = {}
    for _, f in ipairs(functions()) do
      known[f.tag] = true
    end
    for tag in doc:gmatch("%*(norgopolis[%w_.:]*%(%))%*") do
      assert.is_true(known[tag] == true, tag .. " documents no function")
    end
  end)

  it("documents every field of the public types, with its annotated type", function()
    local all = classes()
    assert.is_not_nil(all["norgopolis.Config"])
    for class, fields in pairs(all) do
      assert.is_truthy(doc:find("*" .. class .. "*", 1, true), "no tag *" .. class .. "*")
      for _, f in ipairs(fields) do
        local entry = ("`%s` (%s)"):format(f.name, f.type)
        assert.is_truthy(doc:find(entry, 1, true), class .. ": no entry " .. entry)
      end
    end
  end)

  it("has a tag for every option and every :Norgopolis subcommand", function()
    for name in pairs(require("norgopolis.config").defaults) do
      assert.is_truthy(doc:find("*norgopolis-option-" .. name .. "*", 1, true), name)
    end
    for _, f in ipairs(classes()["norgopolis.Config"]) do
      assert.is_truthy(doc:find("*norgopolis-option-" .. f.name .. "*", 1, true), f.name)
    end
    for name in pairs(require("norgopolis.commands").commands) do
      assert.is_truthy(doc:find("*:Norgopolis-" .. name .. "*", 1, true), name)
    end
  end)

  it("has a tag for the autocmds, every server event of init.lua and the value table", function()
    for _, tag in ipairs({ "NorgopolisEvent", "NorgopolisSession", "norgopolis-values" }) do
      assert.is_truthy(doc:find("*" .. tag .. "*", 1, true), tag)
    end
    local init = table.concat(vim.fn.readfile(helpers.root .. "/lua/norgopolis/init.lua"), "\n")
    local n = 0
    for topic in init:gmatch("\n%-%-%- | `([%w_]+%.[%w_.]+)`") do
      n = n + 1
      assert.is_truthy(doc:find("*norgopolis-event-" .. topic .. "*", 1, true), topic)
    end
    assert.is_true(n >= 5)
  end)

  it(":helptags works on it and :help opens its tags", function()
    local copy = helpers.tmp .. "/helpdoc-" .. vim.uv.hrtime()
    vim.fn.mkdir(copy .. "/doc", "p")
    vim.uv.fs_copyfile(doc_file, copy .. "/doc/norgopolis.txt")
    vim.cmd("helptags " .. vim.fn.fnameescape(copy .. "/doc"))
    vim.opt.rtp:append(copy)
    local tags =
      { "norgopolis", "norgopolis.call()", "norgopolis-option-linger", ":Norgopolis-status" }
    for _, f in ipairs(functions()) do
      table.insert(tags, f.tag)
    end
    for _, tag in ipairs(tags) do
      vim.cmd("help " .. vim.fn.escape(tag, " "))
      assert.equal("norgopolis.txt", vim.fs.basename(vim.api.nvim_buf_get_name(0)), tag)
      assert.is_truthy(vim.api.nvim_get_current_line():find("*" .. tag .. "*", 1, true), tag)
      vim.cmd("helpclose")
    end
    vim.opt.rtp:remove(copy)
  end)
end)
