#!/usr/bin/env luajit
-- An example norgopolis module in Lua: the conformance function set of
-- docs/protocol.md (echo, count, fail, sleep, big). The module's folder is
-- its working directory, so the SDK beside it is found.
package.path = "./?.lua;" .. package.path
local np = require("norgopolis_module")
local m = np.new()

m:fn("echo", function(args)
  return args
end)

m:fn("count", function(n, emit)
  if type(n) ~= "number" or n < 0 then
    error({ code = "InvalidArgument", message = "count: expected a non-negative integer" })
  end
  for i = 0, n - 1 do
    emit(i)
  end
end)

m:fn("fail", function(args)
  if type(args) ~= "table" or args.code == nil then
    error({ code = "InvalidArgument", message = "fail: expected {code, message}" })
  end
  error({ code = args.code, message = args.message or "failed on request" })
end)

m:fn("sleep", function(ms)
  np.sleep(ms)
  return ms
end)

m:fn("big", function(n)
  local block = {}
  for i = 0, 255 do
    block[#block + 1] = string.char(i)
  end
  local s = string.rep(table.concat(block), math.ceil(n / 256)):sub(1, n)
  return np.bin(s)
end)

m:run()
