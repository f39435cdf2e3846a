"""A norgopolis module in Python: the lean protocol (docs/protocol.md) in one
file, standard library only, Python 3.8+.

    from norgopolis_module import Module, Error

    m = Module()

    @m.function("echo")
    def echo(args):
        return args            # one result

    @m.function("count")
    def count(n):
        for i in range(n):     # a generator streams each item
            yield i

    @m.function("check")
    def check(args):
        raise Error("InvalidArgument", "why")

    m.run()

A program that is already running can serve the same functions as an
external module instead: `m.provide("name")` registers with the running
router over its socket and serves calls until the connection ends.

Each call runs in a thread of its own; pings are answered by the reader
thread meanwhile. A streaming call stops at its next item when cancelled, and
waits (itself only) while the caller's credit is used up. MessagePack maps
to Python as: nil None, bool, int (64-bit), float (float64), str, bin bytes,
array list (tuples are sent as arrays), map dict, ext Ext.
"""

import json
import os
import signal
import socket
import stat
import struct
import sys
import threading

__all__ = ["Module", "Error", "Ext", "CODES", "module_config"]

MAGIC = b"NPL1"
INITIAL_CREDIT = 64
MAX_CREDIT = 1 << 20
HELLO, CALL, ITEM, END, ERROR, CANCEL, PING, PONG, CREDIT, ROUTE, PROVIDE = range(11)

#: Error codes by name (docs/protocol.md, section 6).
CODES = {
    name: n
    for n, name in enumerate(
        "Ok Cancelled Unknown InvalidArgument DeadlineExceeded NotFound "
        "AlreadyExists PermissionDenied ResourceExhausted FailedPrecondition "
        "Aborted OutOfRange Unimplemented Internal Unavailable DataLoss "
        "Unauthenticated".split()
    )
}


class Error(Exception):
    """A call's failure as the caller sees it: an error code (name or
    number, see CODES) and a message."""

    def __init__(self, code, message):
        super().__init__(message)
        if isinstance(code, str):
            key = code.replace("_", "").lower()
            found = [n for name, n in CODES.items() if name.lower() == key]
            if not found:
                raise ValueError("unknown error code name %r" % code)
            code = found[0]
        if not 1 <= int(code) <= 16:
            raise ValueError("error code %r is not 1..16" % code)
        self.code = int(code)
        self.message = str(message)


class Ext:
    """A MessagePack extension value: a type and its bytes."""

    __slots__ = ("type", "data")

    def __init__(self, type, data):
        self.type = type
        self.data = bytes(data)

    def __eq__(self, other):
        return isinstance(other, Ext) and (self.type, self.data) == (other.type, other.data)

    def __repr__(self):
        return "Ext(%d, %r)" % (self.type, self.data)


# --- MessagePack --------------------------------------------------------


def pack(value):
    """One value as MessagePack bytes."""
    out = []
    _pack(value, out)
    return b"".join(out)


def _pack(v, out):
    if v is None:
        out.append(b"\xc0")
    elif v is True:
        out.append(b"\xc3")
    elif v is False:
        out.append(b"\xc2")
    elif isinstance(v, int):
        if 0 <= v < 128:
            out.append(struct.pack("B", v))
        elif -32 <= v < 0:
            out.append(struct.pack("b", v))
        elif 0 <= v < 1 << 64:
            out.append(b"\xcf" + struct.pack(">Q", v))
        elif -(1 << 63) <= v < 0:
            out.append(b"\xd3" + struct.pack(">q", v))
        else:
            raise Error("InvalidArgument", "integer %d does not fit in 64 bits" % v)
    elif isinstance(v, float):
        out.append(b"\xcb" + struct.pack(">d", v))
    elif isinstance(v, str):
        b = v.encode("utf-8")
        _head(out, len(b), 0xA0, 32, 0xD9)
        out.append(b)
    elif isinstance(v, (bytes, bytearray, memoryview)):
        b = bytes(v)
        _head(out, len(b), None, 0, 0xC4)
        out.append(b)
    elif isinstance(v, (list, tuple)):
        _head(out, len(v), 0x90, 16, 0xDC)
        for item in v:
            _pack(item, out)
    elif isinstance(v, dict):
        _head(out, len(v), 0x80, 16, 0xDE)
        for key, item in v.items():
            _pack(key, out)
            _pack(item, out)
    elif isinstance(v, Ext):
        n = len(v.data)
        fixed = {1: 0xD4, 2: 0xD5, 4: 0xD6, 8: 0xD7, 16: 0xD8}
        if n in fixed:
            out.append(struct.pack("Bb", fixed[n], v.type))
        else:
            _head(out, n, None, 0, 0xC7)
            out.append(struct.pack("b", v.type))
        out.append(v.data)
    else:
        raise Error("Internal", "cannot send a %s as MessagePack" % type(v).__name__)


def _head(out, n, fix, fix_limit, first):
    """A length header: fix form below fix_limit, else the 8/16/32-bit forms
    starting at `first` (str and bin, array and map lack some)."""
    if fix is not None and n < fix_limit:
        out.append(struct.pack("B", fix | n))
    elif first in (0xD9, 0xC4, 0xC7) and n < 256:
        out.append(struct.pack(">BB", first, n))
    elif n < 65536:
        step = 1 if first in (0xD9, 0xC4, 0xC7) else 0
        out.append(struct.pack(">BH", first + step, n))
    else:
        step = 2 if first in (0xD9, 0xC4, 0xC7) else 1
        out.append(struct.pack(">BI", first + step, n))


def unpack(data):
    """The one MessagePack value of `data` (empty means None)."""
    if not data:
        return None
    value, end = _unpack(data, 0)
    if end != len(data):
        raise Error("InvalidArgument", "%d bytes after the MessagePack value" % (len(data) - end))
    return value


_FIXED = {
    0xCC: ">B", 0xCD: ">H", 0xCE: ">I", 0xCF: ">Q",
    0xD0: ">b", 0xD1: ">h", 0xD2: ">i", 0xD3: ">q",
    0xCA: ">f", 0xCB: ">d",
}
_SIZES = {
    0xC4: ">B", 0xC5: ">H", 0xC6: ">I", 0xD9: ">B", 0xDA: ">H", 0xDB: ">I",
    0xDC: ">H", 0xDD: ">I", 0xDE: ">H", 0xDF: ">I", 0xC7: ">B", 0xC8: ">H", 0xC9: ">I",
}


def _take(data, at, n):
    if at + n > len(data):
        raise Error("InvalidArgument", "MessagePack value cut short")
    return data[at:at + n], at + n


def _unpack(data, at):
    raw, at = _take(data, at, 1)
    b = raw[0]
    if b < 0x80:
        return b, at
    if b >= 0xE0:
        return b - 256, at
    if 0x80 <= b <= 0x8F:
        return _map(data, at, b & 0x0F)
    if 0x90 <= b <= 0x9F:
        return _array(data, at, b & 0x0F)
    if 0xA0 <= b <= 0xBF:
        return _str(data, at, b & 0x1F)
    if b == 0xC0:
        return None, at
    if b == 0xC2:
        return False, at
    if b == 0xC3:
        return True, at
    if b in _FIXED:
        fmt = _FIXED[b]
        raw, at = _take(data, at, struct.calcsize(fmt))
        return struct.unpack(fmt, raw)[0], at
    if b in _SIZES:
        fmt = _SIZES[b]
        raw, at = _take(data, at, struct.calcsize(fmt))
        n = struct.unpack(fmt, raw)[0]
        if b in (0xC4, 0xC5, 0xC6):
            raw, at = _take(data, at, n)
            return bytes(raw), at
        if b in (0xD9, 0xDA, 0xDB):
            return _str(data, at, n)
        if b in (0xDC, 0xDD):
            return _array(data, at, n)
        if b in (0xDE, 0xDF):
            return _map(data, at, n)
        return _ext(data, at, n)
    if 0xD4 <= b <= 0xD8:
        return _ext(data, at, 1 << (b - 0xD4))
    raise Error("InvalidArgument", "byte 0x%02x does not start a MessagePack value" % b)


def _str(data, at, n):
    raw, at = _take(data, at, n)
    try:
        return bytes(raw).decode("utf-8"), at
    except UnicodeDecodeError:
        raise Error("InvalidArgument", "a MessagePack string is not UTF-8")


def _array(data, at, n):
    out = []
    for _ in range(n):
        v, at = _unpack(data, at)
        out.append(v)
    return out, at


def _map(data, at, n):
    out = {}
    for _ in range(n):
        k, at = _unpack(data, at)
        v, at = _unpack(data, at)
        if isinstance(k, list):
            k = tuple(k)
        elif isinstance(k, dict):
            raise Error("InvalidArgument", "a map key that is a map cannot be held in Python")
        out[k] = v
    return out, at


def _ext(data, at, n):
    raw, at = _take(data, at, 1)
    kind = struct.unpack("b", raw)[0]
    body, at = _take(data, at, n)
    return Ext(kind, body), at


# --- the router's socket (external modules) -----------------------------


def _socket_path():
    """$NORGOPOLIS_SOCKET, else $XDG_RUNTIME_DIR/norgopolis/norgopolis.sock,
    else /tmp/norgopolis-$UID/norgopolis.sock (the rule every client follows)."""
    explicit = os.environ.get("NORGOPOLIS_SOCKET")
    if explicit:
        return explicit
    runtime = os.environ.get("XDG_RUNTIME_DIR")
    base = os.path.join(runtime, "norgopolis") if runtime else "/tmp/norgopolis-%d" % os.geteuid()
    return os.path.join(base, "norgopolis.sock")


def _connect_trusted(path):
    """Connects to the router at `path` if its directory is private to us
    and the process listening runs as our uid; raises PermissionError
    naming what is wrong otherwise (nothing is sent)."""
    folder = os.path.dirname(path) or "/"
    info = os.lstat(folder)
    if stat.S_ISLNK(info.st_mode):
        raise PermissionError("refusing %s: it is a symbolic link" % folder)
    if info.st_uid != os.geteuid():
        raise PermissionError(
            "refusing %s: it belongs to uid %d, not to you (uid %d)" % (folder, info.st_uid, os.geteuid())
        )
    if info.st_mode & 0o077:
        raise PermissionError(
            "refusing %s: it is open to others (mode %o); chmod 700 %s"
            % (folder, stat.S_IMODE(info.st_mode), folder)
        )
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
        if hasattr(socket, "SO_PEERCRED"):
            creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
            _, uid, _ = struct.unpack("3i", creds)
            if uid != os.geteuid():
                raise PermissionError(
                    "refusing the norgopolis server at %s: it runs as uid %d, not as you (uid %d)"
                    % (path, uid, os.geteuid())
                )
    except BaseException:
        conn.close()
        raise
    return conn


def _name(text):
    """A u16-length-prefixed UTF-8 name."""
    b = text.encode("utf-8")
    return struct.pack("<H", len(b)) + b


def _shut(conn):
    """Ends both directions of `conn` (its reader then sees the end)."""
    try:
        conn.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass


# --- the module ---------------------------------------------------------


def module_config():
    """The module's configuration from `$NORGOPOLIS_MODULE_CONFIG`: the
    `[modules.NAME]` table of the router's config.toml as a dict ({} when
    none). Anything but a JSON object there raises Error("FailedPrecondition")."""
    text = os.environ.get("NORGOPOLIS_MODULE_CONFIG", "").strip()
    if not text:
        return {}
    try:
        value = json.loads(text)
    except ValueError as e:
        raise Error(
            "FailedPrecondition",
            "bad module configuration in $NORGOPOLIS_MODULE_CONFIG: it is not JSON: %s" % e,
        )
    if not isinstance(value, dict):
        raise Error(
            "FailedPrecondition",
            "bad module configuration in $NORGOPOLIS_MODULE_CONFIG: "
            "expected a JSON object, got %s" % text[:80],
        )
    return value


class _Call:
    """One call in flight: its credit, and whether it is over."""

    def __init__(self, cond):
        self.cond = cond
        self.credit = INITIAL_CREDIT
        self.over = False
        self.timer = None


class Module:
    """A module: register functions, then `run()`."""

    def __init__(self, name=None):
        self.name = name or os.environ.get("NORGOPOLIS_MODULE", "python")
        #: This module's configuration (a dict): its `[modules.NAME]` table.
        self.config = module_config()
        self._functions = {}
        self._calls = {}
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._write_lock = threading.Lock()
        self._out = sys.stdout.buffer
        self._in = sys.stdin.buffer
        # What a failed write means: the router is gone.
        self._gone = lambda: os._exit(0)

    def function(self, name):
        """Decorator registering `fn(args)` as function `name`: a return
        value is one result; a generator streams each item it yields."""

        def register(fn):
            self._functions[name] = fn
            return fn

        return register

    def run(self):
        """Serves the router until it closes stdin (or SIGTERM/SIGINT); exits 0."""
        transport = os.environ.get("NORGOPOLIS_TRANSPORT", "lean")
        if transport != "lean":
            sys.stderr.write(
                "this module speaks only the lean transport; set transport = \"lean\" "
                "in its module.toml (NORGOPOLIS_TRANSPORT is %r)\n" % transport
            )
            sys.exit(2)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: os._exit(0))
        # Calls never run on the main thread: it must stay free to answer pings.
        self._send(HELLO, 0, MAGIC)
        try:
            self._read_loop()
        finally:
            self._finish_all()
        os._exit(0)

    def provide(self, name=None):
        """Registers with the running router as the external module `name`
        (default: this module's name) and serves its calls over the
        router's socket until the connection ends (unloaded, or the server
        exited), then raises ConnectionError saying so. A refusal raises
        Error with the router's code (AlreadyExists: the name is taken).
        The socket is $NORGOPOLIS_SOCKET, else the runtime dir's; it is
        used only when its directory is private to us and the server runs
        as our user."""
        name = name or self.name
        conn = _connect_trusted(_socket_path())
        try:
            self._in = conn.makefile("rb")
            self._out = conn.makefile("wb")
            self._gone = lambda: _shut(conn)
            functions = sorted(self._functions)
            payload = _name(name) + struct.pack("<H", len(functions))
            payload += b"".join(_name(f) for f in functions)
            self._send(HELLO, 0, MAGIC)
            self._send(PROVIDE, 1, payload)
            self._provided(name)
            self.name = name
            try:
                self._read_loop()
            finally:
                self._finish_all()
        finally:
            _shut(conn)
            conn.close()
        raise ConnectionError(
            "the router closed the connection of module '%s' (unloaded, or the server exited)" % name
        )

    def _provided(self, name):
        """Reads the router's hello and its answer to PROVIDE."""
        for expected in (HELLO, END):
            header = self._read_exact(9)
            if header is None:
                raise ConnectionError("the router closed the connection during the handshake")
            length, _, kind = struct.unpack("<IIB", header)
            payload = self._read_exact(max(length - 5, 0)) or b""
            if kind == ERROR and len(payload) >= 4:
                (code,) = struct.unpack("<i", payload[:4])
                raise Error(
                    code if 1 <= code <= 16 else CODES["Unknown"],
                    "the router refused to register module '%s': %s"
                    % (name, payload[4:].decode("utf-8", "replace")),
                )
            if kind != expected:
                raise ConnectionError("the router answered PROVIDE with frame kind %d" % kind)

    # Frames ----------------------------------------------------------------

    def _send(self, kind, call_id, payload=b""):
        frame = struct.pack("<IIB", len(payload) + 5, call_id, kind) + payload
        with self._write_lock:
            try:
                self._out.write(frame)
                self._out.flush()
            except (BrokenPipeError, ValueError, OSError):
                self._gone()

    def _read_exact(self, n):
        chunks = []
        while n > 0:
            chunk = self._in.read(n)
            if not chunk:
                return None
            chunks.append(chunk)
            n -= len(chunk)
        return b"".join(chunks)

    def _read_loop(self):
        while True:
            header = self._read_exact(9)
            if header is None:
                return
            length, call_id, kind = struct.unpack("<IIB", header)
            if length < 5:
                sys.stderr.write("protocol error: frame length %d\n" % length)
                return
            payload = self._read_exact(length - 5)
            if payload is None:
                return
            if kind == CALL:
                self._start(call_id, payload)
            elif kind == CANCEL:
                self._end(call_id)
            elif kind == CREDIT and len(payload) >= 4:
                with self._cond:
                    call = self._calls.get(call_id)
                    if call is not None:
                        call.credit = min(MAX_CREDIT, call.credit + struct.unpack("<I", payload[:4])[0])
                        self._cond.notify_all()
            elif kind == PING and len(payload) >= 8:
                self._send(PONG, 0, payload[:8])
            else:
                sys.stderr.write("protocol error: unexpected frame kind %d\n" % kind)
                return

    # Calls -----------------------------------------------------------------

    def _start(self, call_id, payload):
        flags = payload[0] if payload else 0
        at = 1
        deadline = None
        if flags & 1:
            (ms,) = struct.unpack("<Q", payload[1:9])
            deadline = ms / 1000.0
            at = 9
        (n,) = struct.unpack("<H", payload[at:at + 2])
        name = payload[at + 2:at + 2 + n].decode("utf-8", "replace")
        args = payload[at + 2 + n:]
        call = _Call(self._cond)
        with self._cond:
            self._calls[call_id] = call
        if deadline is not None:
            call.timer = threading.Timer(deadline, self._expire, args=(call_id, call, name))
            call.timer.daemon = True
            call.timer.start()
        threading.Thread(target=self._run_call, args=(call_id, call, name, args), daemon=True).start()

    def _expire(self, call_id, call, name):
        msg = "function '%s' ran past the caller's deadline" % name
        self._finish(call_id, call, ERROR, struct.pack("<i", CODES["DeadlineExceeded"]) + msg.encode())

    def _end(self, call_id):
        """Forgets a call (a CANCEL): nothing more of it is sent."""
        with self._cond:
            call = self._calls.pop(call_id, None)
            if call is not None:
                call.over = True
                if call.timer is not None:
                    call.timer.cancel()
                self._cond.notify_all()

    def _finish(self, call_id, call, kind, payload=b""):
        """Sends a call's last frame, once; False if the call was over."""
        with self._cond:
            if call.over:
                return False
            call.over = True
            self._calls.pop(call_id, None)
            self._cond.notify_all()
            if call.timer is not None:
                call.timer.cancel()
            # Under the lock: an item racing a deadline cannot follow the end.
            self._send(kind, call_id, payload)
        return True

    def _finish_all(self):
        with self._cond:
            for call in self._calls.values():
                call.over = True
            self._calls.clear()
            self._cond.notify_all()

    def _item(self, call_id, call, value):
        """Sends one result once credit allows; False when the call is over."""
        data = pack(value)
        with self._cond:
            while call.credit <= 0 and not call.over:
                self._cond.wait()
            if call.over:
                return False
            call.credit -= 1
            self._send(ITEM, call_id, data)
        return True

    def _run_call(self, call_id, call, name, args):
        fn = self._functions.get(name)
        try:
            if fn is None:
                raise Error(
                    "NotFound",
                    "module '%s' has no function '%s' (has: %s)"
                    % (self.name, name, ", ".join(sorted(self._functions))),
                )
            result = fn(unpack(args))
            if hasattr(result, "__next__") and hasattr(result, "throw"):
                try:
                    for value in result:
                        if not self._item(call_id, call, value):
                            return
                finally:
                    result.close()
            elif not self._item(call_id, call, result):
                return
            self._finish(call_id, call, END)
        except Error as e:
            self._finish(call_id, call, ERROR, struct.pack("<i", e.code) + e.message.encode("utf-8", "replace"))
        except Exception as e:  # noqa: BLE001 - anything else is the function's bug
            msg = "function '%s' raised %s: %s" % (name, type(e).__name__, e)
            self._finish(call_id, call, ERROR, struct.pack("<i", CODES["Internal"]) + msg.encode("utf-8", "replace"))

