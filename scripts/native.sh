#!/bin/sh
# The plugin's native parts (Neovim library, server, CLI, bundled modules):
# how they are built, laid out and switched to. One home for `make`,
# `make dist`, the rock and the Lua installer (lua/norgopolis/build.lua).
#
#   native.sh build              cargo build --profile dist of the plugin's crates
#   native.sh version            the workspace version
#   native.sh platform           <host triple>-nvim<major.minor> (what an archive is for)
#   native.sh stage DIR          lay the dist build out in DIR (a new folder)
#   native.sh install ROOT       stage into ROOT/installed and switch to it
#   native.sh switch ROOT NAME   make ROOT/installed/NAME the current install
#   native.sh dist OUT           OUT/norgopolis-<version>-<platform>.tar.gz, .sha256, manifest.json
#
# Layout of an install (and of an archive's top folder):
#   lib/native.so  bin/norgopolis-server  bin/norgopolis  modules/<name>/...  VERSION
# ROOT/installed/current points at the install in use and
# ROOT/lua/norgopolis/native.so at current/lib/native.so. Nothing is ever
# written over in place: a Neovim that has the library loaded keeps its
# mapping, and the switch itself is one rename.
set -eu

SRC=$(cd "$(dirname "$0")/.." && pwd)
# NORGOPOLIS_PROFILE=debug builds and stages a debug build instead (tests).
PROFILE=${NORGOPOLIS_PROFILE:-dist}
TARGET_DIR=${CARGO_TARGET_DIR:-$SRC/target}
case $PROFILE in debug | dev) PROFILE=dev PROFILE_DIR=$TARGET_DIR/debug ;; *) PROFILE_DIR=$TARGET_DIR/$PROFILE ;; esac
CRATES="-p norgopolis-nvim -p norgopolis-server -p norgopolis-cli -p norgopolis-echo -p norgopolis-notes"
BUNDLED_MODULES="echo notes"

die() {
  echo "native.sh: $*" >&2
  exit 1
}

version() {
  sed -n '/^\[workspace.package\]/,/^\[/s/^version *= *"\(.*\)"/\1/p' "$SRC/Cargo.toml"
}

# The Neovim versions the library is built for come from nvim-oxi's feature
# (`neovim-0-11` -> nvim0.11): the library works with that minor version only.
nvim_tag() {
  grep -o 'neovim-0-[0-9]*' "$SRC/rust/nvim/Cargo.toml" | head -1 | sed 's/neovim-0-/nvim0./'
}

platform() {
  host=$(rustc -vV 2>/dev/null | sed -n 's/^host: //p')
  [ -n "$host" ] || die "rustc is needed to name the platform (is Rust installed?)"
  echo "$host-$(nvim_tag)"
}

build() {
  command -v cargo >/dev/null || die "cargo is required: install Rust from https://rustup.rs"
  # shellcheck disable=SC2086
  cd "$SRC" && cargo build --profile "$PROFILE" $CRATES
}

# Copies SRC_FILE to DEST through a temporary name and a rename, so a
# process that has DEST mapped keeps the old file intact.
put() {
  cp "$1" "$2.tmp.$$"
  mv -f "$2.tmp.$$" "$2"
}

stage() {
  st=$1
  [ ! -e "$st" ] || die "$st exists"
  lib=$PROFILE_DIR/libnorgopolis_nvim.so
  [ -f "$lib" ] || lib=$PROFILE_DIR/libnorgopolis_nvim.dylib
  for f in "$lib" "$PROFILE_DIR/norgopolis-server" "$PROFILE_DIR/norgopolis"; do
    [ -f "$f" ] || die "$f is missing: run \`sh scripts/native.sh build\` (or \`make\`) first"
  done
  mkdir -p "$st/lib" "$st/bin" "$st/modules"
  cp "$lib" "$st/lib/native.so"
  cp "$PROFILE_DIR/norgopolis-server" "$PROFILE_DIR/norgopolis" "$st/bin/"
  for m in $BUNDLED_MODULES; do
    mkdir "$st/modules/$m"
    cp "$PROFILE_DIR/$m" "$st/modules/$m/$m"
    cp "$SRC/rust/modules/$m/module.toml" "$st/modules/$m/module.toml"
  done
  echo "$(version) $(platform)" >"$st/VERSION"
}

# Renames a symlink over another one (or over a file) in one step: GNU mv
# needs -T, BSD mv -h, not to move it into the directory the link names.
replace_link() {
  mv -T "$1" "$2" 2>/dev/null || mv -hf "$1" "$2"
}

switch() {
  root=$1
  name=$2
  dir=$root/installed
  [ -f "$dir/$name/lib/native.so" ] || die "$dir/$name is not an install (no lib/native.so)"
  previous=$(readlink "$dir/current" 2>/dev/null || true)
  ln -s "$name" "$dir/.current.$$"
  replace_link "$dir/.current.$$" "$dir/current"
  link=$root/lua/norgopolis/native.so
  want=../../installed/current/lib/native.so
  if [ "$(readlink "$link" 2>/dev/null || true)" != "$want" ]; then
    ln -s "$want" "$link.tmp.$$"
    replace_link "$link.tmp.$$" "$link"
  fi
  # Keep the previous install (a running server or Neovim may use it; it
  # is also the way back), drop older ones.
  for old in "$dir"/*; do
    base=${old##*/}
    case $base in current | "$name" | "$previous") ;; *) rm -rf "$old" ;; esac
  done
}

install() {
  root=$1
  mkdir -p "$root/installed"
  name=norgopolis-$(version)-$(platform)-$(date +%Y%m%d%H%M%S)-$$
  stage "$root/installed/.staging-$$"
  mv "$root/installed/.staging-$$" "$root/installed/$name"
  switch "$root" "$name"
  echo "installed $(version) for $(platform) in $root/installed/$name"
}

sha256() {
  if command -v sha256sum >/dev/null; then
    sha256sum "$1" | cut -d' ' -f1
  else
    shasum -a 256 "$1" | cut -d' ' -f1
  fi
}

dist() {
  out=$1
  mkdir -p "$out"
  out=$(cd "$out" && pwd)
  base=norgopolis-$(version)-$(platform)
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  stage "$tmp/$base"
  tar -C "$tmp" -czf "$tmp/$base.tar.gz" "$base"
  mv -f "$tmp/$base.tar.gz" "$out/$base.tar.gz"
  sum=$(sha256 "$out/$base.tar.gz")
  echo "$sum  $base.tar.gz" >"$out/$base.tar.gz.sha256"
  # The manifest lists every archive of this version in OUT (one per
  # platform when several machines fill the same folder).
  {
    printf '{\n  "version": "%s",\n  "artifacts": [' "$(version)"
    sep=
    for a in "$out"/norgopolis-"$(version)"-*.tar.gz; do
      f=${a##*/}
      p=${f#norgopolis-"$(version)"-}
      printf '%s\n    { "platform": "%s", "file": "%s", "sha256": "%s", "size": %s }' \
        "$sep" "${p%.tar.gz}" "$f" "$(cut -d' ' -f1 "$a.sha256")" "$(wc -c <"$a" | tr -d ' ')"
      sep=,
    done
    printf '\n  ]\n}\n'
  } >"$out/manifest.json"
  echo "$out/$base.tar.gz ($(wc -c <"$out/$base.tar.gz" | tr -d ' ') bytes, sha256 $sum)"
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case $cmd in
  build) build ;;
  version) version ;;
  platform) platform ;;
  stage) [ $# -eq 1 ] || die "usage: native.sh stage DIR"; stage "$1" ;;
  install) [ $# -eq 1 ] || die "usage: native.sh install ROOT"; install "$1" ;;
  switch) [ $# -eq 2 ] || die "usage: native.sh switch ROOT NAME"; switch "$1" "$2" ;;
  dist) [ $# -eq 1 ] || die "usage: native.sh dist OUT"; dist "$1" ;;
  *) die "unknown command '${cmd}' (build, version, platform, stage, install, switch, dist)" ;;
esac
