-- The Lua <-> MessagePack mapping, locally (no server): see the table in
-- lua/norgopolis/init.lua.
local native = require("norgopolis.core").native()
local norgopolis = require("norgopolis")
local ffi = require("ffi")

local function rt(v)
  local out, err = native.roundtrip({ v })
  assert.is_nil(err)
  return out
end

local function bytes(v)
  local s = norgopolis.encode(v)
  return { s:byte(1, -1) }
end

local function encode_error(v)
  local ok, err = pcall(norgopolis.encode, v)
  assert.is_false(ok, "expected an error for " .. vim.inspect(v))
  return err
end

describe("value mapping", function()
  it("nil and vim.NIL are MessagePack nil", function()
    assert.same({ 0xc0 }, bytes(nil))
    assert.same({ 0xc0 }, bytes(vim.NIL))
    assert.is_nil(rt(nil))
    assert.is_nil(rt(vim.NIL))
  end)

  it("nested nil comes back as vim.NIL, keeping list length and map keys", function()
    local out = rt({ 1, vim.NIL, 3 })
    assert.equal(3, #out)
    assert.equal(vim.NIL, out[2])
    local m = rt({ a = vim.NIL })
    assert.equal(vim.NIL, m.a)
  end)

  it("booleans", function()
    assert.same({ 0xc3 }, bytes(true))
    assert.same({ 0xc2 }, bytes(false))
    assert.is_true(rt(true))
    assert.is_false(rt(false))
  end)

  it("integral numbers are integers, exactly, across the 64-bit range", function()
    assert.same({ 0x2a }, bytes(42))
    assert.same({ 0xff }, bytes(-1))
    assert.same({ 0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0 }, bytes(-2 ^ 63))
    assert.same({ 0xcf, 0x80, 0, 0, 0, 0, 0, 0, 0 }, bytes(2 ^ 63))
    assert.equal(2 ^ 53, rt(2 ^ 53))
    assert.equal("number", type(rt(2 ^ 53)))
    assert.equal(-(2 ^ 53), rt(-(2 ^ 53)))
  end)

  it("integers beyond 2^53 come back as exact 64-bit cdata, not rounded floats", function()
    local big = rt(9007199254740993LL)
    assert.is_true(ffi.istype("int64_t", big))
    assert.equal("9007199254740993LL", tostring(big))
    assert.equal("-9223372036854775808LL", tostring(rt(-9223372036854775807LL - 1)))
    assert.equal("18446744073709551615ULL", tostring(rt(18446744073709551615ULL)))
    assert.equal("9223372036854775807LL", tostring(rt(9223372036854775807LL)))
    -- a double above 2^53 is sent as its exact integer value
    assert.equal("1152921504606846976LL", tostring(rt(2 ^ 60)))
  end)

  it("non-integral numbers are floats, never truncated", function()
    assert.same({ 0xcb, 0x3f, 0xf8, 0, 0, 0, 0, 0, 0 }, bytes(1.5))
    assert.equal(1.5, rt(1.5))
    assert.equal(1e-20, rt(1e-20))
    assert.equal(-1e-300, rt(-1e-300))
    assert.equal(math.huge, rt(math.huge))
    assert.equal(-math.huge, rt(-math.huge))
    local nan = rt(0 / 0)
    assert.is_true(nan ~= nan)
    local negzero = rt(-0.0)
    assert.equal(-math.huge, 1 / negzero)
    assert.equal(0xcb, bytes(1e300)[1])
    assert.equal(0xcb, bytes(2 ^ 64)[1])
  end)

  it("strings are binary-safe: UTF-8 as str, other bytes as bin", function()
    assert.same({ 0xa2, 0x68, 0x69 }, bytes("hi"))
    assert.same({ 0xc4, 0x02, 0xff, 0x00 }, bytes("\255\0"))
    local all = {}
    for i = 0, 255 do
      all[#all + 1] = string.char(i)
    end
    local s = table.concat(all)
    assert.equal(s, rt(s))
    assert.equal("a\0b", rt("a\0b"))
    assert.equal("héllo ✓", rt("héllo ✓"))
    assert.equal("", rt(""))
  end)

  it("lists are arrays and dict-like tables are maps", function()
    assert.same({ 0x93, 1, 2, 3 }, bytes({ 1, 2, 3 }))
    assert.same({ 0x81, 0xa1, 0x61, 0x01 }, bytes({ a = 1 }))
    local v = { 1, "two", { three = 3, list = { true, false } }, { { {} } } }
    assert.same(v, rt(v))
  end)

  it("{} is an empty array and vim.empty_dict() an empty map, both ways", function()
    assert.same({ 0x90 }, bytes({}))
    assert.same({ 0x80 }, bytes(vim.empty_dict()))
    local out = rt({ list = {}, map = vim.empty_dict() })
    assert.same({}, out.list)
    assert.is_nil(getmetatable(out.list))
    assert.equal(vim._empty_dict_mt, getmetatable(out.map))
    assert.same({ 0x80 }, bytes(rt(vim.empty_dict())))
  end)

  it("map keys are sorted, so equal tables encode to equal bytes", function()
    assert.equal(
      norgopolis.encode({ b = 1, a = 2, c = 3 }),
      norgopolis.encode({ c = 3, a = 2, b = 1 })
    )
  end)

  it("refuses sparse tables instead of dropping items", function()
    local err = encode_error({ 1, nil, 3 })
    assert.matches("sparse array", err)
    assert.matches("vim.NIL", err)
    assert.matches("sparse", encode_error({ [2] = "x" }))
    assert.matches("sparse", encode_error({ [0] = "x", [1] = "y" }))
    assert.matches("sparse", encode_error({ [-1] = "x" }))
  end)

  it("refuses tables mixing list items and string keys", function()
    assert.matches("mixes array items", encode_error({ 1, 2, x = 3 }))
  end)

  it("refuses keys that are neither strings nor 1..n", function()
    assert.matches("boolean key", encode_error({ [true] = 1 }))
    assert.matches("non%-integer number key", encode_error({ [1.5] = 1 }))
    assert.matches("table key", encode_error({ [{}] = 1 }))
  end)

  it("refuses functions, userdata and threads, naming where they are", function()
    assert.matches("cannot send a function %(value%.cb%)", encode_error({ cb = print }))
    assert.matches("value%[2%]", encode_error({ 1, coroutine.create(print) }))
    assert.matches("thread", encode_error(coroutine.create(print)))
    assert.matches("userdata", encode_error(vim.uv.new_timer()))
    assert.matches("cdata", encode_error(ffi.new("int[2]")))
    assert.matches('value%["odd key"%]', encode_error({ ["odd key"] = print }))
  end)

  it("refuses tables that contain themselves", function()
    local t = {}
    t.self = t
    assert.matches("nested more than 100", encode_error(t))
  end)

  it("decodes what other encoders produce (vim.mpack)", function()
    local packed = vim.mpack.encode({ a = { 1, 2 }, b = "x" })
    assert.same({ a = { 1, 2 }, b = "x" }, norgopolis.decode(packed))
    assert.equal(42, norgopolis.decode(vim.mpack.encode(42)))
  end)

  it("reports invalid MessagePack and unsupported ext types", function()
    local ok, err = pcall(norgopolis.decode, "\146\001") -- array of 2, one item
    assert.is_false(ok)
    assert.matches("invalid MessagePack", err)
    ok, err = pcall(norgopolis.decode, "\212\001\000") -- fixext1, type 1
    assert.is_false(ok)
    assert.matches("extension type 1", err)
    ok, err = pcall(norgopolis.decode, "\001\002")
    assert.is_false(ok)
    assert.matches("trailing", err)
  end)
end)
