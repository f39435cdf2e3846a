--- A norgopolis module in Lua: the lean protocol (docs/protocol.md) in one
--- file without dependencies. Runs under `nvim -l`, LuaJIT and Lua 5.1+.
---
--- ```lua
--- local m = require("norgopolis_module").new()
--- m:fn("echo", function(args) return args end)              -- one result
--- m:fn("count", function(n, emit) for i = 0, n - 1 do emit(i) end end) -- a stream
--- m:fn("check", function() error({ code = "InvalidArgument", message = "why" }) end)
--- m:run()
--- ```
---
--- A program that is already running can serve the same functions as an
--- external module: `m:provide("name")` registers with the running router
--- over its socket and serves calls until the connection ends (LuaJIT's
--- `ffi` on Linux: LuaJIT, `nvim -l`).
---
--- Calls run as coroutines, so one waiting for credit or in `m.sleep(ms)`
--- lets the others (and pings) go on. With LuaJIT's `ffi` (LuaJIT, Neovim)
--- everything in the protocol works; on plain Lua, reads block, so
--- deadlines, `sleep` and cancellation take effect only between frames.
---
--- MessagePack in Lua: nil is `nil` (as an argument or result) and
--- `M.null` inside arrays and maps; strings that are valid UTF-8 are sent as
--- str, others as bin (`M.bin(s)` forces bin); integers beyond 2^53 arrive as
--- `int64_t`/`uint64_t` cdata where `ffi` exists; `{}` is an empty array,
--- `M.map({})` an empty map (maps received keep their kind); extension values
--- are `M.ext(type, data)`.

local M = {}

local has_ffi, ffi = pcall(require, "ffi")
if not has_ffi then
  ffi = nil
end

local INITIAL_CREDIT = 64
local MAX_CREDIT = 1048576
local K = {
  HELLO = 0,
  CALL = 1,
  ITEM = 2,
  END = 3,
  ERROR = 4,
  CANCEL = 5,
  PING = 6,
  PONG = 7,
  CREDIT = 8,
  PROVIDE = 10,
}

--- Error codes by name (docs/protocol.md, section 6).
M.codes = {}
for i, name in ipairs({
  "Cancelled",
  "Unknown",
  "InvalidArgument",
  "DeadlineExceeded",
  "NotFound",
  "AlreadyExists",
  "PermissionDenied",
  "ResourceExhausted",
  "FailedPrecondition",
  "Aborted",
  "OutOfRange",
  "Unimplemented",
  "Internal",
  "Unavailable",
  "DataLoss",
  "Unauthenticated",
}) do
  M.codes[name] = i
end

-- Markers -------------------------------------------------------------------

--- Nil inside arrays and maps.
M.null = setmetatable({}, {
  __tostring = function()
    return "null"
  end,
})
local MAP = {}
local BIN = {}
local EXT = {}

--- Marks `t` as a MessagePack map (an empty one, or one with keys 1..n).
---@param t table
---@return table
function M.map(t)
  return setmetatable(t, MAP)
end

--- A string sent as MessagePack bin.
---@param s string
---@return table
function M.bin(s)
  return setmetatable({ data = s }, BIN)
end

--- A MessagePack extension value.
---@param type integer
---@param data string
---@return table
function M.ext(type, data)
  return setmetatable({ type = type, data = data }, EXT)
end

-- Bytes -----------------------------------------------------------------------

local char, byte, floor = string.char, string.byte, math.floor
local unpack_ = table.unpack or unpack

local function u8s(v, n) -- big-endian, n bytes of a non-negative integer
  local t = {}
  for i = n, 1, -1 do
    t[i] = v % 256
    v = floor(v / 256)
  end
  return char(unpack_(t))
end

local function le32(v)
  return char(v % 256, floor(v / 256) % 256, floor(v / 65536) % 256, floor(v / 16777216) % 256)
end

local function rd_le32(s, i)
  local a, b, c, d = byte(s, i, i + 3)
  return a + b * 256 + c * 65536 + d * 16777216
end

local function rd_be(s, i, n)
  local v = 0
  for k = i, i + n - 1 do
    v = v * 256 + byte(s, k)
  end
  return v
end

-- Floats: through ffi where it exists, by arithmetic elsewhere.
local f64_to_bytes, bytes_to_f64, bytes_to_f32
if ffi then
  local u = ffi.new("union { double d; float f; uint8_t b[8]; }")
  f64_to_bytes = function(x)
    u.d = x
    local b = u.b
    return char(b[7], b[6], b[5], b[4], b[3], b[2], b[1], b[0])
  end
  bytes_to_f64 = function(s, i)
    for k = 0, 7 do
      u.b[7 - k] = byte(s, i + k)
    end
    return u.d
  end
  bytes_to_f32 = function(s, i)
    for k = 0, 3 do
      u.b[3 - k] = byte(s, i + k)
    end
    return tonumber(u.f)
  end
else
  f64_to_bytes = function(x)
    local sign = 0
    if x < 0 or (x == 0 and 1 / x < 0) then
      sign, x = 128, -x
    end
    if x ~= x then
      return char(0x7f, 0xf8, 0, 0, 0, 0, 0, 0)
    elseif x == math.huge then
      return char(sign + 0x7f, 0xf0, 0, 0, 0, 0, 0, 0)
    elseif x == 0 then
      return char(sign, 0, 0, 0, 0, 0, 0, 0)
    end
    local m, e = math.frexp(x) -- x = m * 2^e, 0.5 <= m < 1
    e = e + 1022
    if e <= 0 then -- subnormal
      m, e = m * 2 ^ (e - 1), 0
    else
      m = m * 2 - 1
    end
    m = m * 2 ^ 52
    local hi = floor(m / 2 ^ 32)
    return char(sign + floor(e / 16), (e % 16) * 16 + floor(hi / 65536))
      .. u8s(hi % 65536, 2)
      .. u8s(m % 2 ^ 32, 4)
  end
  local function from_parts(sign, e, m, bias, mbits)
    local v
    if e == 0 then
      v = m * 2 ^ (1 - bias - mbits)
    elseif e == 2 * bias + 1 then
      v = m == 0 and math.huge or 0 / 0
    else
      v = (1 + m / 2 ^ mbits) * 2 ^ (e - bias)
    end
    return sign == 1 and -v or v
  end
  bytes_to_f64 = function(s, i)
    local b1, b2 = byte(s, i, i + 1)
    local m = (b2 % 16) * 2 ^ 48 + rd_be(s, i + 2, 6)
    return from_parts(floor(b1 / 128), (b1 % 128) * 16 + floor(b2 / 16), m, 1023, 52)
  end
  bytes_to_f32 = function(s, i)
    local b1, b2 = byte(s, i, i + 1)
    local m = (b2 % 128) * 65536 + rd_be(s, i + 2, 2)
    return from_parts(floor(b1 / 128), (b1 % 128) * 2 + floor(b2 / 128), m, 127, 23)
  end
end

-- 64-bit integers beyond doubles: cdata where ffi exists.
local U64, I64
if ffi then
  U64 = ffi.typeof("uint64_t")
  I64 = ffi.typeof("int64_t")
end

local function is_utf8(s)
  if not s:find("[\128-\255]") then
    return true
  end
  local i, n = 1, #s
  while i <= n do
    local c = byte(s, i)
    local len = c < 0x80 and 1
      or c >= 0xC2 and c < 0xE0 and 2
      or c >= 0xE0 and c < 0xF0 and 3
      or c >= 0xF0 and c < 0xF5 and 4
      or nil
    if not len or i + len - 1 > n then
      return false
    end
    for k = i + 1, i + len - 1 do
      local cc = byte(s, k)
      if cc < 0x80 or cc > 0xBF then
        return false
      end
    end
    i = i + len
  end
  return true
end

-- MessagePack -----------------------------------------------------------------

local encode_into

local function head(out, n, fix, fix_limit, b8, b16, b32)
  if fix and n < fix_limit then
    out[#out + 1] = char(fix + n)
  elseif b8 and n < 256 then
    out[#out + 1] = char(b8, n)
  elseif n < 65536 then
    out[#out + 1] = char(b16) .. u8s(n, 2)
  else
    out[#out + 1] = char(b32) .. u8s(n, 4)
  end
end

local function encode_int(out, x) -- x: an integer-valued number within 64 bits
  if x >= 0 and x < 128 then
    out[#out + 1] = char(x)
  elseif x < 0 and x >= -32 then
    out[#out + 1] = char(x + 256)
  elseif x >= 0 and x < 2 ^ 32 then
    out[#out + 1] = char(0xce) .. u8s(x, 4)
  elseif x < 0 and x >= -2 ^ 31 then
    out[#out + 1] = char(0xd2) .. u8s(x + 2 ^ 32, 4)
  else
    local hi = floor(x / 2 ^ 32)
    local lo = x - hi * 2 ^ 32
    out[#out + 1] = char(x < 0 and 0xd3 or 0xcf) .. u8s(hi % 2 ^ 32, 4) .. u8s(lo, 4)
  end
end

local function encode_cdata(out, v)
  local neg = ffi.istype(I64, v) and v < 0
  local u = ffi.cast(U64, v)
  local hi = tonumber(u / 4294967296)
  local lo = tonumber(u % 4294967296)
  out[#out + 1] = char(neg and 0xd3 or 0xcf) .. u8s(hi, 4) .. u8s(lo, 4)
end

local function is_array(t)
  local n = 0
  for _ in pairs(t) do
    n = n + 1
  end
  for i = 1, n do
    if t[i] == nil then
      return false
    end
  end
  return true, n
end

function encode_into(out, v, where)
  local ty = type(v)
  if v == nil or v == M.null then
    out[#out + 1] = "\192"
  elseif ty == "boolean" then
    out[#out + 1] = v and "\195" or "\194"
  elseif ty == "number" then
    if v == floor(v) and v >= -2 ^ 63 and v < 2 ^ 64 and not (v == 0 and 1 / v < 0) then
      encode_int(out, v)
    else
      out[#out + 1] = "\203" .. f64_to_bytes(v)
    end
  elseif ty == "string" then
    if is_utf8(v) then
      head(out, #v, 0xa0, 32, 0xd9, 0xda, 0xdb)
    else
      head(out, #v, nil, 0, 0xc4, 0xc5, 0xc6)
    end
    out[#out + 1] = v
  elseif ty == "cdata" and ffi and (ffi.istype(U64, v) or ffi.istype(I64, v)) then
    encode_cdata(out, v)
  elseif ty == "table" then
    local mt = getmetatable(v)
    if mt == BIN then
      head(out, #v.data, nil, 0, 0xc4, 0xc5, 0xc6)
      out[#out + 1] = v.data
    elseif mt == EXT then
      local n = #v.data
      local fixed = ({ [1] = 0xd4, [2] = 0xd5, [4] = 0xd6, [8] = 0xd7, [16] = 0xd8 })[n]
      if fixed then
        out[#out + 1] = char(fixed)
      else
        head(out, n, nil, 0, 0xc7, 0xc8, 0xc9)
      end
      out[#out + 1] = char(v.type % 256) .. v.data
    else
      local array, n = is_array(v)
      if array and mt ~= MAP then
        head(out, n, 0x90, 16, nil, 0xdc, 0xdd)
        for i = 1, n do
          encode_into(out, v[i], where)
        end
      else
        local count = 0
        for _ in pairs(v) do
          count = count + 1
        end
        head(out, count, 0x80, 16, nil, 0xde, 0xdf)
        for key, item in pairs(v) do
          encode_into(out, key, where)
          encode_into(out, item, where)
        end
      end
    end
  else
    error(
      { code = "Internal", message = where .. ": cannot send a " .. ty .. " as MessagePack" },
      0
    )
  end
end

--- One value as MessagePack bytes.
---@param v any
---@return string
function M.encode(v)
  local out = {}
  encode_into(out, v, "result")
  return table.concat(out)
end

local decode_at

local function bad(why)
  error({ code = "InvalidArgument", message = "arguments: " .. why }, 0)
end

local function need(s, i, n)
  if i + n - 1 > #s then
    bad("MessagePack value cut short")
  end
end

local function big_int(hi, lo, signed)
  if signed and hi >= 2 ^ 31 then
    if hi >= 2 ^ 32 - 2 ^ 21 or not ffi then -- within -2^53: exact as a number
      return (hi - 2 ^ 32) * 2 ^ 32 + lo
    end
    return ffi.cast(I64, ffi.new(U64, hi) * 4294967296 + lo)
  end
  if hi < 2 ^ 21 or not ffi then -- below 2^53: exact as a number
    return hi * 2 ^ 32 + lo
  end
  local u = ffi.new(U64, hi) * 4294967296 + lo
  return signed and ffi.cast(I64, u) or u
end

local function collection(s, i, n, is_map)
  local t = {}
  for k = 1, n do
    local key, item
    if is_map then
      key, i = decode_at(s, i)
      if key == nil or key == M.null then
        bad("a map key is nil")
      end
    else
      key = k
    end
    item, i = decode_at(s, i)
    if item == nil then
      item = M.null
    end
    t[key] = item
  end
  if is_map then
    setmetatable(t, MAP)
  end
  return t, i
end

local SIZED = { -- first byte: length bytes, kind
  [0xc4] = { 1, "bin" },
  [0xc5] = { 2, "bin" },
  [0xc6] = { 4, "bin" },
  [0xd9] = { 1, "str" },
  [0xda] = { 2, "str" },
  [0xdb] = { 4, "str" },
  [0xdc] = { 2, "array" },
  [0xdd] = { 4, "array" },
  [0xde] = { 2, "map" },
  [0xdf] = { 4, "map" },
  [0xc7] = { 1, "ext" },
  [0xc8] = { 2, "ext" },
  [0xc9] = { 4, "ext" },
}

local function sized(s, i, n, kind)
  if kind == "array" or kind == "map" then
    return collection(s, i, n, kind == "map")
  end
  if kind == "ext" then
    need(s, i, n + 1)
    local t = byte(s, i)
    return M.ext(t >= 128 and t - 256 or t, s:sub(i + 1, i + n)), i + n + 1
  end
  need(s, i, n)
  return s:sub(i, i + n - 1), i + n
end

function decode_at(s, i)
  need(s, i, 1)
  local b = byte(s, i)
  i = i + 1
  if b < 0x80 then
    return b, i
  elseif b >= 0xe0 then
    return b - 256, i
  elseif b < 0x90 then
    return collection(s, i, b - 0x80, true)
  elseif b < 0xa0 then
    return collection(s, i, b - 0x90, false)
  elseif b < 0xc0 then
    return sized(s, i, b - 0xa0, "str")
  elseif b == 0xc0 then
    return nil, i
  elseif b == 0xc2 then
    return false, i
  elseif b == 0xc3 then
    return true, i
  elseif b == 0xca then
    need(s, i, 4)
    return bytes_to_f32(s, i), i + 4
  elseif b == 0xcb then
    need(s, i, 8)
    return bytes_to_f64(s, i), i + 8
  elseif b >= 0xcc and b <= 0xce then
    local n = 2 ^ (b - 0xcc)
    need(s, i, n)
    return rd_be(s, i, n), i + n
  elseif b == 0xcf or b == 0xd3 then
    need(s, i, 8)
    return big_int(rd_be(s, i, 4), rd_be(s, i + 4, 4), b == 0xd3), i + 8
  elseif b >= 0xd0 and b <= 0xd2 then
    local n = 2 ^ (b - 0xd0)
    need(s, i, n)
    local v = rd_be(s, i, n)
    if v >= 2 ^ (8 * n - 1) then
      v = v - 2 ^ (8 * n)
    end
    return v, i + n
  elseif b >= 0xd4 and b <= 0xd8 then
    return sized(s, i, 2 ^ (b - 0xd4), "ext")
  elseif SIZED[b] then
    local len, kind = SIZED[b][1], SIZED[b][2]
    need(s, i, len)
    return sized(s, i + len, rd_be(s, i, len), kind)
  end
  bad(string.format("byte 0x%02x does not start a MessagePack value", b))
end

--- The value of MessagePack bytes (empty means nil).
---@param s string
---@return any
function M.decode(s)
  if s == "" then
    return nil
  end
  local v, i = decode_at(s, 1)
  if i <= #s then
    bad((#s - i + 1) .. " bytes after the MessagePack value")
  end
  return v
end

-- Stdio ---------------------------------------------------------------------

-- The descriptors frames are read from and written to: stdin and stdout,
-- or the router's socket (m:provide()).
local io_ = { rfd = 0, wfd = 1 }
if ffi then
  for _, decl in ipairs({
    "long read(int, void *, unsigned long);",
    "long write(int, const void *, unsigned long);",
    "struct pollfd { int fd; short events; short revents; };",
    "int poll(struct pollfd *, unsigned long, int);",
    "struct timespec { long tv_sec; long tv_nsec; };",
    "int clock_gettime(int, struct timespec *);",
  }) do
    pcall(ffi.cdef, decl) -- already declared (inside Neovim) is fine
  end
  local C = ffi.C
  local rbuf = ffi.new("uint8_t[?]", 1048576)
  local pfd = ffi.new("struct pollfd[1]")
  local ts = ffi.new("struct timespec")
  --- Up to 1 MiB of whatever stdin has; nil at its end.
  function io_.read()
    while true do
      local n = tonumber(C.read(io_.rfd, rbuf, 1048576))
      if n > 0 then
        return ffi.string(rbuf, n)
      elseif n == 0 then
        return nil
      elseif ffi.errno() ~= 4 then -- EINTR: again
        return nil
      end
    end
  end
  --- Writes all of `s`; false when the router is gone.
  function io_.write(s)
    local at, n = 0, #s
    while at < n do
      local w = tonumber(C.write(io_.wfd, ffi.cast("const char *", s) + at, n - at))
      if w < 0 then
        if ffi.errno() ~= 4 then
          return false
        end
      else
        at = at + w
      end
    end
    return true
  end
  --- Whether stdin has bytes within `ms` (-1: wait for them).
  function io_.readable(ms)
    pfd[0].fd, pfd[0].events = io_.rfd, 1
    return C.poll(pfd, 1, ms) ~= 0
  end
  function io_.now()
    C.clock_gettime(1, ts)
    return tonumber(ts.tv_sec) * 1000 + tonumber(ts.tv_nsec) / 1e6
  end
else
  local stdin, stdout = io.stdin, io.stdout
  stdin:setvbuf("no")
  --- One whole frame: reads block, so only whole frames are asked for.
  function io_.read()
    local head = stdin:read(4)
    if not head or #head < 4 then
      return nil
    end
    local rest = stdin:read(rd_le32(head, 1))
    return rest and head .. rest or nil
  end
  function io_.write(s)
    stdout:write(s)
    return stdout:flush() ~= nil
  end
  --- Without poll, reading is only safe when nothing else is runnable.
  function io_.readable(ms)
    return ms ~= 0
  end
  function io_.now()
    return os.time() * 1000
  end
end

-- The module ----------------------------------------------------------------

local CANCELLED = {}

---@class norgopolis.Module
---@field name string
---@field config table This module's configuration (`M.config()`).
local Module = {}
Module.__index = Module

--- A new module; `name` defaults to `$NORGOPOLIS_MODULE`.
---@param name? string
---@return norgopolis.Module
function M.new(name)
  return setmetatable({
    name = name or os.getenv("NORGOPOLIS_MODULE") or "lua",
    config = M.config(),
    functions = {},
    calls = {},
    ready = {},
    timers = {},
    out = {},
    out_bytes = 0,
    chunks = {},
    pos = 1,
    have = 0,
  }, Module)
end

--- Registers `handler(args)` (one result: its return value) or, when it
--- declares a second parameter, `handler(args, emit)` (a stream: each
--- `emit(value)` sends one result).
---@param name string
---@param handler fun(args: any, emit?: fun(value: any))
function Module:fn(name, handler)
  local streams = nil
  if debug and debug.getinfo then
    local info = debug.getinfo(handler, "u")
    if info and info.nparams then
      streams = info.nparams >= 2
    end
  end
  self.functions[name] = { handler = handler, streams = streams }
end

--- Waits `ms` milliseconds inside a call, letting other calls run.
---@param ms number
function M.sleep(ms)
  coroutine.yield("sleep", io_.now() + ms)
end

function Module:send(kind, id, payload)
  payload = payload or ""
  local frame = le32(#payload + 5) .. le32(id) .. char(kind) .. payload
  self.out[#self.out + 1] = frame
  self.out_bytes = self.out_bytes + #frame
end

function Module:flush()
  if #self.out > 0 then
    if not io_.write(table.concat(self.out)) then
      self.gone = true -- the router is gone
    end
    self.out, self.out_bytes = {}, 0
  end
end

--- Sends a call's last frame once and forgets the call.
function Module:finish(call, kind, payload)
  if call.over then
    return
  end
  call.over = true
  self.calls[call.id] = nil
  self:send(kind, call.id, payload)
end

local function code_of(code)
  if type(code) == "number" and code >= 1 and code <= 16 then
    return floor(code)
  end
  if type(code) == "string" then
    local key = code:gsub("_", ""):lower()
    for name, n in pairs(M.codes) do
      if name:lower() == key then
        return n
      end
    end
  end
  return nil
end

function Module:fail(call, code, message)
  local payload = u8s(code, 4):reverse() .. tostring(message)
  self:finish(call, K.ERROR, payload)
end

function Module:start(id, payload)
  local flags = byte(payload, 1) or 0
  local at, deadline = 2, nil
  if flags % 2 == 1 then
    deadline = rd_le32(payload, 2) + rd_le32(payload, 6) * 2 ^ 32
    at = 10
  end
  local n = byte(payload, at) + byte(payload, at + 1) * 256
  local name = payload:sub(at + 2, at + 1 + n)
  local args = payload:sub(at + 2 + n)
  local call = { id = id, name = name, credit = INITIAL_CREDIT }
  self.calls[id] = call
  local f = self.functions[name]
  if not f then
    local names = {}
    for k in pairs(self.functions) do
      names[#names + 1] = k
    end
    table.sort(names)
    local msg = ("module '%s' has no function '%s' (has: %s)"):format(
      self.name,
      name,
      table.concat(names, ", ")
    )
    return self:fail(call, M.codes.NotFound, msg)
  end
  if deadline then
    self.timers[#self.timers + 1] = { at = io_.now() + deadline, call = call, deadline = true }
  end
  local emitted = false
  local function emit(value)
    if call.over then
      error(CANCELLED, 0)
    end
    local data = M.encode(value)
    while call.credit <= 0 do
      call.waiting = true
      coroutine.yield("credit")
      if call.over then
        error(CANCELLED, 0)
      end
    end
    call.credit = call.credit - 1
    emitted = true
    self:send(K.ITEM, id, data)
    if self.out_bytes > 65536 then
      -- Let the loop write and read (a CANCEL, a PING) before going on.
      coroutine.yield("ready")
    end
  end
  call.co = coroutine.create(function()
    local result = f.handler(M.decode(args), emit)
    if f.streams == false or (f.streams == nil and not emitted) then
      emit(result)
    end
  end)
  self:resume(call)
end

function Module:resume(call)
  if call.over then
    return
  end
  local ok, what, wake = coroutine.resume(call.co)
  if not ok then
    if what == CANCELLED then
      return
    end
    if type(what) == "table" and what.code then
      local code = code_of(what.code)
      if code then
        return self:fail(call, code, what.message or "")
      end
      return self:fail(
        call,
        M.codes.Internal,
        ("function '%s' raised an unknown error code %s"):format(call.name, tostring(what.code))
      )
    end
    return self:fail(
      call,
      M.codes.Internal,
      ("function '%s' failed: %s"):format(call.name, tostring(what))
    )
  end
  if coroutine.status(call.co) == "dead" then
    return self:finish(call, K.END)
  end
  if what == "sleep" then
    self.timers[#self.timers + 1] = { at = wake, call = call }
  elseif what == "ready" then
    self.ready[#self.ready + 1] = call
  end
  -- "credit": a CREDIT frame makes it ready again.
end

function Module:handle(id, kind, payload)
  if kind == K.CALL then
    self:start(id, payload)
  elseif kind == K.CANCEL then
    local call = self.calls[id]
    if call then
      call.over = true
      self.calls[id] = nil
    end
  elseif kind == K.CREDIT then
    local call = self.calls[id]
    if call and #payload >= 4 then
      call.credit = math.min(MAX_CREDIT, call.credit + rd_le32(payload, 1))
      if call.waiting then
        call.waiting = false
        self.ready[#self.ready + 1] = call
      end
    end
  elseif kind == K.PING then
    self:send(K.PONG, 0, payload:sub(1, 8))
  else
    io.stderr:write(("protocol error: unexpected frame kind %d\n"):format(kind))
    self.broken = true
  end
end

--- The next whole frame in the input buffer, or nil.
function Module:take_frame()
  if self.have < 9 then
    return nil
  end
  local first = self.chunks[1]
  local pos = self.pos
  if #first - pos + 1 < 9 then
    first = table.concat(self.chunks):sub(pos)
    self.chunks, self.pos, pos = { first }, 1, 1
  end
  local len = rd_le32(first, pos)
  if self.have < 4 + len then
    return nil
  end
  if #first - pos + 1 < 4 + len then
    first = table.concat(self.chunks):sub(pos)
    self.chunks, self.pos, pos = { first }, 1, 1
  end
  local id, kind = rd_le32(first, pos + 4), byte(first, pos + 8)
  local payload = first:sub(pos + 9, pos + 3 + len)
  self.pos = pos + 4 + len
  self.have = self.have - 4 - len
  if self.pos > #first then
    table.remove(self.chunks, 1)
    self.pos = 1
  end
  return id, kind, payload
end

--- Milliseconds until the next timer (-1: none), firing those due.
function Module:run_timers()
  local now, next_at = io_.now(), nil
  local keep = {}
  for _, t in ipairs(self.timers) do
    if t.call.over then -- dropped
    elseif t.at <= now then
      if t.deadline then
        self:fail(
          t.call,
          M.codes.DeadlineExceeded,
          ("function '%s' ran past the caller's deadline"):format(t.call.name)
        )
      else
        self.ready[#self.ready + 1] = t.call
      end
    else
      keep[#keep + 1] = t
      next_at = math.min(next_at or t.at, t.at)
    end
  end
  self.timers = keep
  return next_at and math.max(0, math.ceil(next_at - now)) or -1
end

--- Serves the router until it closes stdin, then exits with status 0.
function Module:run()
  local transport = os.getenv("NORGOPOLIS_TRANSPORT") or "lean"
  if transport ~= "lean" then
    io.stderr:write(
      ('this module speaks only the lean transport; set transport = "lean" in its module.toml (NORGOPOLIS_TRANSPORT is %q)\n'):format(
        transport
      )
    )
    os.exit(2)
  end
  self:send(K.HELLO, 0, "NPL1")
  self:serve()
  os.exit(self.broken and 1 or 0)
end

--- Reads what the router sent into the input buffer; false at its end.
function Module:take_input()
  local chunk = io_.read()
  if not chunk then
    return false
  end
  self.chunks[#self.chunks + 1] = chunk
  self.have = self.have + #chunk
  return true
end

--- Runs calls and reads frames until the router's end closes (or it
--- breaks the protocol).
function Module:serve()
  while not (self.gone or self.broken) do
    while #self.ready > 0 do
      local ready = self.ready
      self.ready = {}
      for _, call in ipairs(ready) do
        self:resume(call)
      end
    end
    local wait = self:run_timers()
    self:flush()
    if #self.ready > 0 then
      wait = 0
    end
    if io_.readable(wait) then
      if not self:take_input() then
        self:flush()
        return
      end
      while not self.broken do
        local id, kind, payload = self:take_frame()
        if not id then
          break
        end
        self:handle(id, kind, payload)
      end
    end
  end
  self:flush()
end

-- External modules ------------------------------------------------------------

--- `$NORGOPOLIS_SOCKET`, else `$XDG_RUNTIME_DIR/norgopolis/norgopolis.sock`,
--- else `/tmp/norgopolis-$UID/norgopolis.sock` (every client's rule).
local function socket_path(uid)
  local explicit = os.getenv("NORGOPOLIS_SOCKET")
  if explicit and explicit ~= "" then
    return explicit
  end
  local runtime = os.getenv("XDG_RUNTIME_DIR")
  local dir = (runtime and runtime ~= "") and (runtime .. "/norgopolis")
    or ("/tmp/norgopolis-" .. uid)
  return dir .. "/norgopolis.sock"
end

--- Refuses a socket directory that is a symlink, someone else's or open to
--- others (where `vim.uv` or luv can tell); the peer check follows anyway.
local function check_dir(path, uid)
  local ok, uv = pcall(function()
    return (vim and vim.uv) or require("luv")
  end)
  if not ok or not uv then
    return true
  end
  local dir = path:match("^(.*)/[^/]*$") or "."
  local st = uv.fs_lstat(dir)
  if not st then
    return nil,
      ("cannot connect to the norgopolis router at %s: %s does not exist"):format(path, dir)
  end
  if st.type == "link" then
    return nil, ("refusing %s: it is a symbolic link"):format(dir)
  end
  if st.uid ~= uid then
    return nil, ("refusing %s: it belongs to uid %d, not to you (uid %d)"):format(dir, st.uid, uid)
  end
  if st.mode % 64 ~= 0 then -- any group or other bit
    return nil, ("refusing %s: it is open to others; chmod 700 %s"):format(dir, dir)
  end
  return true
end

--- Connects to the router's socket if it is ours (directory private to us,
--- listener of our uid); the descriptor, or nil and why.
local function connect_router()
  if not ffi or ffi.os ~= "Linux" then
    return nil,
      "m:provide() needs LuaJIT's ffi on Linux (LuaJIT or nvim -l) to open the router's socket"
  end
  for _, decl in ipairs({
    "int socket(int, int, int);",
    "int connect(int, const void *, unsigned int);",
    "int getsockopt(int, int, int, void *, unsigned int *);",
    "unsigned int geteuid(void);",
    "int close(int);",
    "struct np_sockaddr_un { unsigned short family; char path[108]; };",
    "struct np_ucred { int pid; unsigned int uid; unsigned int gid; };",
  }) do
    pcall(ffi.cdef, decl)
  end
  local C = ffi.C
  local uid = tonumber(C.geteuid())
  local path = socket_path(uid)
  local ok, why = check_dir(path, uid)
  if not ok then
    return nil, why
  end
  if #path >= 108 then
    return nil, ("the socket path %s is too long for a Unix socket"):format(path)
  end
  local fd = C.socket(1, 1, 0) -- AF_UNIX, SOCK_STREAM
  if fd < 0 then
    return nil, "cannot create a socket (errno " .. ffi.errno() .. ")"
  end
  local addr = ffi.new("struct np_sockaddr_un")
  addr.family = 1
  ffi.copy(addr.path, path)
  if C.connect(fd, addr, ffi.sizeof(addr)) ~= 0 then
    local errno = ffi.errno()
    C.close(fd)
    return nil,
      ("cannot connect to the norgopolis router at %s (errno %d): is it running?"):format(
        path,
        errno
      )
  end
  local cred = ffi.new("struct np_ucred")
  local len = ffi.new("unsigned int[1]", ffi.sizeof(cred))
  if C.getsockopt(fd, 1, 17, cred, len) ~= 0 or cred.uid ~= uid then -- SOL_SOCKET, SO_PEERCRED
    C.close(fd)
    return nil,
      ("refusing the norgopolis server at %s: it does not run as you (uid %d)"):format(path, uid)
  end
  return fd
end

local function name_field(s)
  return char(#s % 256, math.floor(#s / 256)) .. s
end

--- Reads the router's hello and its answer to PROVIDE: true, or nil, the
--- message and the error code's name.
function Module:provided(name)
  for _, expected in ipairs({ K.HELLO, K.END }) do
    local id, kind, payload = self:take_frame()
    while not id do
      if not self:take_input() then
        return nil, "the router closed the connection during the handshake"
      end
      id, kind, payload = self:take_frame()
    end
    if kind == K.ERROR and #payload >= 4 then
      local code = rd_le32(payload, 1)
      local code_name = "Unknown"
      for n, c in pairs(M.codes) do
        if c == code then
          code_name = n
        end
      end
      return nil,
        ("the router refused to register module '%s': %s: %s"):format(
          name,
          code_name,
          payload:sub(5)
        ),
        code_name
    end
    if kind ~= expected then
      return nil, ("the router answered PROVIDE with frame kind %d"):format(kind)
    end
  end
  return true
end

--- Registers with the running router as the external module `name`
--- (default: this module's name) and serves its calls over the router's
--- socket until the connection ends. Returns nil and why it ended (and,
--- when the router refused the name, the error code's name, such as
--- `"AlreadyExists"`).
---@param name? string
---@return nil, string, string?
function Module:provide(name)
  name = name or self.name
  local fd, why = connect_router()
  if not fd then
    return nil, why
  end
  io_.rfd, io_.wfd = fd, fd
  local functions = {}
  for f in pairs(self.functions) do
    functions[#functions + 1] = f
  end
  table.sort(functions)
  local payload = { name_field(name), char(#functions % 256, math.floor(#functions / 256)) }
  for _, f in ipairs(functions) do
    payload[#payload + 1] = name_field(f)
  end
  self:send(K.HELLO, 0, "NPL1")
  self:send(K.PROVIDE, 1, table.concat(payload))
  self:flush()
  local ok, err, code = self:provided(name)
  if ok then
    self.name = name
    self:serve()
    err = self.broken and "the router broke the lean protocol"
      or ("the router closed the connection of module '%s' (unloaded, or the server exited)"):format(
        name
      )
  end
  ffi.C.close(fd)
  io_.rfd, io_.wfd = 0, 1
  return nil, err, code
end

-- Configuration ---------------------------------------------------------------

--- Decodes JSON text: objects become `M.map` tables, null `M.null` (the
--- MessagePack mapping above). Raises a message naming the position.
---@param text string
---@return any
local function json_decode(text)
  local pos = 1
  local function fail(what)
    error(("%s at byte %d"):format(what, pos), 0)
  end
  local function skip()
    pos = text:find("[^ \t\r\n]", pos) or #text + 1
  end
  local escapes = { b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }
  local function utf8_char(cp)
    if cp < 0x80 then
      return string.char(cp)
    elseif cp < 0x800 then
      return string.char(0xC0 + math.floor(cp / 64), 0x80 + cp % 64)
    elseif cp < 0x10000 then
      return string.char(
        0xE0 + math.floor(cp / 4096),
        0x80 + math.floor(cp / 64) % 64,
        0x80 + cp % 64
      )
    end
    return string.char(
      0xF0 + math.floor(cp / 262144),
      0x80 + math.floor(cp / 4096) % 64,
      0x80 + math.floor(cp / 64) % 64,
      0x80 + cp % 64
    )
  end
  local function hex4()
    local h = text:match("^%x%x%x%x", pos)
    if not h then
      fail("bad \\u escape")
    end
    pos = pos + 4
    return tonumber(h, 16)
  end
  local function str()
    pos = pos + 1 -- the opening quote
    local parts = {}
    while true do
      local run_end = text:find('["\\]', pos)
      if not run_end then
        fail("unterminated string")
      end
      parts[#parts + 1] = text:sub(pos, run_end - 1)
      pos = run_end + 1
      if text:sub(run_end, run_end) == '"' then
        return table.concat(parts)
      end
      local e = text:sub(pos, pos)
      pos = pos + 1
      if e == "u" then
        local cp = hex4()
        if cp >= 0xD800 and cp < 0xDC00 and text:sub(pos, pos + 1) == "\\u" then
          pos = pos + 2
          cp = 0x10000 + (cp - 0xD800) * 1024 + (hex4() - 0xDC00)
        end
        parts[#parts + 1] = utf8_char(cp)
      elseif escapes[e] then
        parts[#parts + 1] = escapes[e]
      elseif e == '"' or e == "\\" or e == "/" then
        parts[#parts + 1] = e
      else
        fail("bad escape")
      end
    end
  end
  local value
  local function list(close, item)
    pos = pos + 1
    skip()
    if text:sub(pos, pos) == close then
      pos = pos + 1
      return
    end
    while true do
      item()
      skip()
      local c = text:sub(pos, pos)
      pos = pos + 1
      if c == close then
        return
      elseif c ~= "," then
        fail("expected ',' or '" .. close .. "'")
      end
    end
  end
  value = function()
    skip()
    local c = text:sub(pos, pos)
    if c == "{" then
      local t = M.map({})
      list("}", function()
        skip()
        if text:sub(pos, pos) ~= '"' then
          fail("expected a key")
        end
        local k = str()
        skip()
        if text:sub(pos, pos) ~= ":" then
          fail("expected ':'")
        end
        pos = pos + 1
        t[k] = value()
      end)
      return t
    elseif c == "[" then
      local t = {}
      list("]", function()
        t[#t + 1] = value()
      end)
      return t
    elseif c == '"' then
      return str()
    end
    for word, v in pairs({ ["true"] = true, ["false"] = false, null = M.null }) do
      if text:sub(pos, pos + #word - 1) == word then
        pos = pos + #word
        return v
      end
    end
    local num = text:match("^-?%d+%.?%d*[eE]?[-+]?%d*", pos)
    if not num or not tonumber(num) then
      fail("unexpected " .. (c == "" and "end" or ("'" .. c .. "'")))
    end
    pos = pos + #num
    return tonumber(num)
  end
  local v = value()
  skip()
  if pos <= #text then
    fail("trailing characters")
  end
  return v
end

--- `vim.json`'s result in this file's mapping: `vim.NIL` as `M.null`,
--- objects as `M.map`.
local function from_vim_json(v)
  if v == vim.NIL then
    return M.null
  elseif type(v) ~= "table" then
    return v
  end
  local is_object = getmetatable(v) ~= nil or (next(v) ~= nil and v[1] == nil)
  local out = {}
  for k, x in pairs(v) do
    out[k] = from_vim_json(x)
  end
  return is_object and M.map(out) or out
end

--- This module's configuration from `$NORGOPOLIS_MODULE_CONFIG`: the
--- `[modules.NAME]` table of the router's config.toml (an empty map when
--- there is none). Decoded with `vim.json` under Neovim, with a small
--- decoder elsewhere; anything but a JSON object raises an error.
---@return table
function M.config()
  local text = os.getenv("NORGOPOLIS_MODULE_CONFIG") or ""
  if not text:find("%S") then
    return M.map({})
  end
  local ok, v
  if vim and vim.json then
    ok, v = pcall(vim.json.decode, text)
    v = ok and from_vim_json(v) or v
  else
    ok, v = pcall(json_decode, text)
  end
  local prefix = "bad module configuration in $NORGOPOLIS_MODULE_CONFIG: "
  if not ok then
    error(prefix .. "it is not JSON: " .. tostring(v), 0)
  end
  if type(v) ~= "table" or getmetatable(v) ~= MAP then
    error(prefix .. "expected a JSON object, got " .. text:sub(1, 80), 0)
  end
  return v
end

return M
