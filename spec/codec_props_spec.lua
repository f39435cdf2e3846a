-- Property tests of the Lua <-> MessagePack mapping: random values, random
-- and mutated bytes. Cases per property: $PROPTEST_CASES (default 300;
-- `make fuzz` runs many more). The seed is $NORGOPOLIS_PROP_SEED or a fresh
-- one, and every failure names it, so a failing run can be replayed.
local ffi = require("ffi")
local norgopolis = require("norgopolis")
local native = require("norgopolis.core").native()

local CASES = tonumber(vim.env.PROPTEST_CASES) or 300
local SEED = tonumber(vim.env.NORGOPOLIS_PROP_SEED) or (vim.uv.hrtime() % 2 ^ 31)
math.randomseed(SEED)

local function rand_string()
  local n = math.random(0, 24)
  local kind = math.random(3)
  local out = {}
  for i = 1, n do
    if kind == 1 then
      out[i] = string.char(math.random(32, 126)) -- ASCII
    elseif kind == 2 then
      out[i] = string.char(math.random(0, 255)) -- any bytes: NUL, invalid UTF-8
    else
      out[i] = ({ "é", "ß", "→", "😀", "a" })[math.random(5)] -- multi-byte UTF-8
    end
  end
  return table.concat(out)
end

local EDGE_NUMBERS = {
  0,
  -0.0,
  1,
  -1,
  127,
  128,
  255,
  256,
  65535,
  65536,
  -32,
  -33,
  2 ^ 31,
  -(2 ^ 31),
  2 ^ 32,
  2 ^ 53,
  -(2 ^ 53),
  2 ^ 63,
  -(2 ^ 63),
  0.5,
  -1.25,
  1e300,
  -1e-300,
  math.huge,
  -math.huge,
}

local function rand_number()
  local pick = math.random(4)
  if pick == 1 then
    return EDGE_NUMBERS[math.random(#EDGE_NUMBERS)]
  elseif pick == 2 then
    return math.random(-2 ^ 31, 2 ^ 31)
  elseif pick == 3 then
    return (math.random() - 0.5) * 10 ^ math.random(-5, 15)
  end
  return math.random(0, 2 ^ 20) * 2 ^ math.random(0, 40) -- large integral floats
end

local function rand_cdata()
  local pick = math.random(3)
  if pick == 1 then
    return 9007199254740993LL + math.random(0, 1000) -- beyond 2^53
  elseif pick == 2 then
    return -9007199254740993LL - math.random(0, 1000)
  end
  return 18446744073709551615ULL - math.random(0, 1000) -- near the top of uint64
end

local rand_value

local function rand_list(depth)
  local t = {}
  for i = 1, math.random(1, 5) do
    local v = rand_value(depth + 1)
    t[i] = v == nil and vim.NIL or v
  end
  return t
end

local function rand_map(depth)
  local t = {}
  for _ = 1, math.random(1, 5) do
    local v = rand_value(depth + 1)
    t[rand_string()] = v == nil and vim.NIL or v
  end
  return t
end

--- A random sendable value, at most a few levels deep.
function rand_value(depth)
  local pick = math.random(depth >= 4 and 7 or 10)
  if pick == 1 then
    return depth == 0 and nil or vim.NIL
  elseif pick == 2 then
    return math.random(2) == 1
  elseif pick == 3 then
    return rand_number()
  elseif pick == 4 then
    return rand_cdata()
  elseif pick <= 7 then
    return rand_string()
  elseif pick == 8 then
    return math.random(2) == 1 and {} or vim.empty_dict()
  elseif pick == 9 then
    return rand_list(depth)
  end
  return rand_map(depth)
end

--- What a value should come back as: small cdata integers as numbers,
--- integral numbers beyond 2^53 as exact 64-bit cdata, a top-level
--- vim.NIL as nil; everything else unchanged.
local function expected(v, top)
  if v == vim.NIL then
    return (not top) and vim.NIL or nil
  end
  if
    type(v) == "number"
    and v % 1 == 0
    and math.abs(v) > 2 ^ 53
    and v >= -(2 ^ 63)
    and v < 2 ^ 64
  then
    return v >= 2 ^ 63 and ffi.new("uint64_t", v) or ffi.new("int64_t", v)
  end
  if type(v) == "cdata" then
    -- Compared as 64-bit integers: tonumber() would round at the edge.
    local small
    if ffi.istype("uint64_t", v) then
      small = v <= 9007199254740992ULL
    else
      small = v >= -9007199254740992LL and v <= 9007199254740992LL
    end
    return small and tonumber(v) or v
  end
  if type(v) == "table" then
    local out = {}
    for k, item in pairs(v) do
      out[k] = expected(item, false)
    end
    return setmetatable(out, getmetatable(v))
  end
  return v
end

--- Deep equality that tells -0.0 from 0, empty maps from empty arrays and
--- int64 from uint64 cdata.
local function same(a, b)
  if type(a) ~= type(b) then
    return false
  end
  if type(a) == "number" then
    if a ~= a then
      return b ~= b -- NaN
    end
    return a == b and (a ~= 0 or 1 / a == 1 / b)
  end
  if type(a) == "cdata" then
    return tostring(a) == tostring(b)
  end
  if type(a) ~= "table" then
    return a == b
  end
  if (getmetatable(a) == vim._empty_dict_mt) ~= (getmetatable(b) == vim._empty_dict_mt) then
    return false
  end
  for k, v in pairs(a) do
    if not same(v, b[k]) then
      return false
    end
  end
  for k in pairs(b) do
    if a[k] == nil then
      return false
    end
  end
  return true
end

local function check(ok, what, value)
  if not ok then
    error(
      ("%s (seed %d; replay with NORGOPOLIS_PROP_SEED=%d)\nvalue: %s"):format(
        what,
        SEED,
        SEED,
        vim.inspect(value)
      ),
      2
    )
  end
end

describe("value mapping properties", function()
  it("every sendable value comes back as itself", function()
    for _ = 1, CASES do
      local v = rand_value(0)
      local out, err = native.roundtrip({ v })
      check(err == nil, "round trip failed: " .. tostring(err), v)
      check(same(expected(v, true), out), "came back different: " .. vim.inspect(out), v)
    end
  end)

  it("encoding is canonical: decode then encode gives the same bytes", function()
    for _ = 1, CASES do
      local v = rand_value(0)
      local bytes = norgopolis.encode(v)
      check(
        norgopolis.encode(norgopolis.decode(bytes)) == bytes,
        "bytes changed on a second encode",
        v
      )
      -- Another encoder reads what we write.
      if type(v) ~= "cdata" and not (type(v) == "table" and vim.tbl_isempty(v)) then
        check(pcall(vim.mpack.decode, bytes), "vim.mpack cannot read it", v)
      end
    end
  end)

  -- (Decoded values need not be sendable back: a map with boolean keys is
  -- a fine Lua table but not something we encode.)
  it("random and damaged bytes decode or fail with a message, never worse", function()
    for _ = 1, CASES do
      local bytes
      if math.random(2) == 1 then
        local n = math.random(0, 32)
        local t = {}
        for i = 1, n do
          t[i] = string.char(math.random(0, 255))
        end
        bytes = table.concat(t)
      else
        bytes = norgopolis.encode(rand_value(0))
        local at = math.random(1, #bytes)
        if math.random(2) == 1 then
          bytes = bytes:sub(1, at - 1) -- truncated
        else
          bytes = bytes:sub(1, at - 1) .. string.char(math.random(0, 255)) .. bytes:sub(at + 1)
        end
      end
      local ok, value, err = pcall(native.decode, bytes)
      check(ok, "decode raised instead of returning an error: " .. tostring(value), bytes)
      check(err == nil or (type(err) == "string" and err ~= ""), "error without a message", bytes)
      -- The same bytes always give the same answer.
      local again, err2 = native.decode(bytes)
      check(err2 == err, "a second decode disagrees", bytes)
      if err == nil and type(value) ~= "table" then
        check(same(value, again), "a second decode disagrees", bytes)
      end
    end
  end)

  it("tables that cannot be sent are refused with the place, never half-sent", function()
    for _ = 1, CASES do
      local v = rand_list(0)
      local broken = math.random(3)
      if broken == 1 then
        v[#v + 2] = true -- a hole
      elseif broken == 2 then
        v.extra = 1 -- list items mixed with a string key
      else
        v[#v] = { f = print } -- a function, one level down
      end
      local bytes, err = native.encode({ v })
      check(bytes == nil and type(err) == "string", "not refused", v)
      check(err:find("value", 1, true) ~= nil, "error does not name the place: " .. err, v)
    end
  end)
end)
