-- Installs the Neovim plugin: Lua modules, plugin/ (the :Norgopolis
-- command), the native library (as norgopolis.native), the server and the
-- `norgopolis` CLI (`:Norgopolis install` runs it from beside the server).
-- Built with cargo in the dist profile by scripts/native.sh (the same build
-- and layout as `make`):
--   luarocks --lua-version 5.1 make rockspec/norgopolis-scm-1.rockspec [--tree DIR]
-- `luarocks pack norgopolis scm-1` after that writes a binary rock for this
-- platform, which installs without cargo. luarocks removes the files of the
-- version it replaces before deploying new ones, so a Neovim that has the
-- library loaded keeps its (unlinked) copy.
-- NORGOPOLIS_ROCK_PROFILE=debug builds and installs a debug build (tests use it).
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
export NORGOPOLIS_PROFILE="${NORGOPOLIS_ROCK_PROFILE:-dist}"
sh scripts/native.sh build
rm -rf target/rock
sh scripts/native.sh stage target/rock
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
      ["norgopolis.build"] = "lua/norgopolis/build.lua",
      ["norgopolis.install"] = "lua/norgopolis/install.lua",
      ["norgopolis.notes"] = "lua/norgopolis/notes.lua",
      ["norgopolis.paths"] = "lua/norgopolis/paths.lua",
      ["norgopolis.provide"] = "lua/norgopolis/provide.lua",
      ["norgopolis.ui"] = "lua/norgopolis/ui.lua",
      ["norgopolis.version"] = "lua/norgopolis/version.lua",
    },
    lib = {
      ["norgopolis.native"] = "target/rock/lib/native.so",
    },
    bin = {
      ["norgopolis-server"] = "target/rock/bin/norgopolis-server",
      ["norgopolis"] = "target/rock/bin/norgopolis",
    },
  },
  copy_directories = { "plugin" },
}
