#!/usr/bin/env python3
"""An example norgopolis module in Python: the conformance function set of
docs/protocol.md (echo, count, fail, sleep, big)."""

import time

from norgopolis_module import Error, Module

m = Module()


@m.function("echo")
def echo(args):
    return args


@m.function("count")
def count(n):
    if not isinstance(n, int) or n < 0:
        raise Error("InvalidArgument", "count: expected a non-negative integer, got %r" % (n,))
    for i in range(n):
        yield i


@m.function("fail")
def fail(args):
    if not isinstance(args, dict) or "code" not in args:
        raise Error("InvalidArgument", "fail: expected {code, message}")
    try:
        raise Error(args["code"], args.get("message", "failed on request"))
    except ValueError as e:
        raise Error("InvalidArgument", "fail: %s" % e)


@m.function("sleep")
def sleep(ms):
    time.sleep(ms / 1000.0)
    return ms


@m.function("big")
def big(n):
    return (bytes(range(256)) * (n // 256 + 1))[:n]


m.run()
