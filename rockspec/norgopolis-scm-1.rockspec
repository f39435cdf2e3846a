-- Installs the Neovim plugin: Lua modules, plugin/ (the :Norgopolis
-- command), the native library (as norgopolis.native), the server and the
-- `norgopolis` CLI (`:Norgopolis install` runs it from beside the server).
-- Built from the working tree with cargo, so it needs no network beyond
-- what cargo already has:
--   luarocks --lua-version 5.1 make rockspec/norgopolis-scm-1.rockspec [--tree DIR]
-- NORGOPOLIS_ROCK_PROFILE=debug reuses a debug build (tests use it).
rockspec_format = "3.0"
package = "norgopolis"
version = "scm-1"

source = {
  url = "git+https://github.com/nvim-neorg/norgopolis",
}

description = {
  summary = "Neovim front end for norgopolis, the router for native Neorg modules",
  detailed = [[
Calls native Neorg modules through the per-user norgopolis server from
Neovim: asynchronous streaming calls, :Norgopolis and :checkhealth norgopolis.
]],
  license = "MIT",
  labels = { "neovim", "neorg" },
}

dependencies = {
  "lua == 5.1",
}

build = {
  type = "command",
  -- No $(...) here: luarocks substitutes its own variables in that form.
  build_command = [[
set -e
profile="${NORGOPOLIS_ROCK_PROFILE:-release}"
flag=--release
if [ "$profile" != release ]; then flag=; fi
cargo build $flag -p norgopolis-nvim -p norgopolis-server -p norgopolis-cli
mkdir -p target/rock
cp -f "target/$profile/libnorgopolis_nvim.so" target/rock/native.so
cp -f "target/$profile/norgopolis-server" target/rock/norgopolis-server
cp -f "target/$profile/norgopolis" target/rock/norgopolis
]],
  install = {
    lua = {
      ["norgopolis"] = "lua/norgopolis/init.lua",
      ["norgopolis.commands"] = "lua/norgopolis/commands.lua",
      ["norgopolis.complete"] = "lua/norgopolis/complete.lua",
      ["norgopolis.config"] = "lua/norgopolis/config.lua",
      ["norgopolis.core"] = "lua/norgopolis/core.lua",
      ["norgopolis.events"] = "lua/norgopolis/events.lua",
      ["norgopolis.health"] = "lua/norgopolis/health.lua",
      ["norgopolis.install"] = "lua/norgopolis/install.lua",
      ["norgopolis.paths"] = "lua/norgopolis/paths.lua",
      ["norgopolis.ui"] = "lua/norgopolis/ui.lua",
    },
    lib = {
      ["norgopolis.native"] = "target/rock/native.so",
    },
    bin = {
      ["norgopolis-server"] = "target/rock/norgopolis-server",
      ["norgopolis"] = "target/rock/norgopolis",
    },
  },
  copy_directories = { "plugin" },
}
