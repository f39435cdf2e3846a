---@mod norgopolis.events Server events: `on()` subscriptions and `User NorgopolisEvent`
---
--- Every event the server sends this Neovim's session is handed, on the
--- main loop and in the server's order, first to the `on()` handlers whose
--- topic (and module, if given) match exactly, in the order they
--- subscribed, then to the `User NorgopolisEvent` autocmd.

local core = require("norgopolis.core")

local M = {}

---@class norgopolis.Event
---@field module string who published it ("norgopolis" for the server's own lifecycle events)
---@field topic string
---@field payload any the decoded payload (see the value table in lua/norgopolis/init.lua); nil if none
---@field seq integer the server's sequence number: increases in delivery order
---@field payload_error? string why `payload` is missing, when it could not be decoded

---@class norgopolis.Subscription
---@field topic string
---@field module? string
---@field fn fun(event: norgopolis.Event)
---@field active boolean

---@type norgopolis.Subscription[]
local subs = {}

--- Adds a handler; returns the function that removes it (idempotent).
---@param topic string
---@param fn fun(event: norgopolis.Event)
---@param module? string
---@return fun() unsubscribe
function M.subscribe(topic, fn, module)
  local sub = { topic = topic, module = module, fn = fn, active = true }
  table.insert(subs, sub)
  return function()
    if not sub.active then
      return
    end
    sub.active = false
    for i, s in ipairs(subs) do
      if s == sub then
        table.remove(subs, i)
        break
      end
    end
  end
end

--- Number of active subscriptions (for tests and health).
---@return integer
function M.count()
  return #subs
end

--- Fires the autocmd. Its `data` passes through Neovim's API conversion,
--- which cannot carry 64-bit integer cdata: such an event still fires,
--- with the payload left out and `payload_error` saying why.
---@param ev norgopolis.Event
local function fire_autocmd(ev)
  local ok, err = pcall(vim.api.nvim_exec_autocmds, "User", {
    pattern = "NorgopolisEvent",
    data = ev,
    modeline = false,
  })
  if ok or ev.payload == nil then
    return
  end
  if not tostring(err):match("Invalid 'data'") then
    -- An autocmd callback failed: Neovim has not reported it (pcall).
    vim.notify(
      "norgopolis: error in a NorgopolisEvent autocmd: " .. tostring(err),
      vim.log.levels.ERROR
    )
    return
  end
  pcall(vim.api.nvim_exec_autocmds, "User", {
    pattern = "NorgopolisEvent",
    data = {
      module = ev.module,
      topic = ev.topic,
      seq = ev.seq,
      payload_error = "the payload cannot pass through an autocmd's data (64-bit integers); "
        .. 'subscribe with require("norgopolis").on() to receive it',
    },
    modeline = false,
  })
end

--- Delivers one event from the native side (`{ type = "event", module,
--- topic, payload?, payload_error?, seq }`).
---@param raw table
function M.dispatch(raw)
  local payload = raw.payload
  if payload == vim.NIL then
    -- The payload sits inside the report, where nil is vim.NIL; at the top
    -- level the value table says nil.
    payload = nil
  end
  ---@type norgopolis.Event
  local ev = {
    module = raw.module,
    topic = raw.topic,
    payload = payload,
    seq = raw.seq,
    payload_error = raw.payload_error,
  }
  -- A snapshot: handlers may subscribe or unsubscribe while this runs.
  for _, sub in ipairs({ unpack(subs) }) do
    if sub.active and sub.topic == ev.topic and (sub.module == nil or sub.module == ev.module) then
      core.protected(("an event handler for %q"):format(ev.topic), sub.fn, ev)
    end
  end
  fire_autocmd(ev)
end

return M
