//! Command-line syntax.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// Call norgopolis modules and control the norgopolis server.
///
/// Starts the server when none is running (except for `shutdown`).
#[derive(Debug, Parser)]
#[command(name = "norgopolis", version, propagate_version = true)]
pub struct Cli {
    /// Socket of the server (default: $NORGOPOLIS_SOCKET, else the per-user runtime dir).
    #[arg(long, global = true, value_name = "PATH")]
    pub socket: Option<PathBuf>,
    /// Server binary to start when needed (default: $NORGOPOLIS_SERVER,
    /// beside this program, then PATH).
    #[arg(long, global = true, value_name = "PATH")]
    pub server: Option<PathBuf>,
    /// Fail instead of starting a server when none is running.
    #[arg(long, global = true)]
    pub no_spawn: bool,
    /// For a server this command starts: a modules dir (repeatable, searched in order).
    #[arg(long, global = true, value_name = "DIR", alias = "path")]
    pub modules_dir: Vec<PathBuf>,
    /// For a server this command starts: how long it stays after its last client leaves ("20ms", "3s", or seconds).
    #[arg(long, global = true, value_name = "DUR")]
    pub linger: Option<String>,
    #[command(subcommand)]
    pub command: Command,
}

/// What to do.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Call FUNCTION of MODULE; prints each result as one line of JSON as it arrives.
    ///
    /// ARGS is JSON ("-" reads it from stdin; absent means nil). Integers stay
    /// integers, other numbers are floats. In results, binary data is printed as a
    /// string when it is valid UTF-8 and as an array of byte values otherwise;
    /// non-string map keys are turned into their JSON text; NaN and infinities
    /// become null; extension values become {"ext": TYPE, "data": [BYTES]}.
    Call {
        /// Module name.
        module: String,
        /// Function name.
        function: String,
        /// Arguments as JSON.
        args: Option<String>,
    },
    /// Show the server and its loaded modules.
    Status {
        /// Print the status as JSON.
        #[arg(long)]
        json: bool,
    },
    /// List modules available on disk and loaded.
    Modules {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Load a module by name, or from a path to its executable or folder.
    Load {
        /// Module name, or a path (anything containing '/').
        target: String,
        /// Name to load a path under (default: its file name).
        #[arg(long)]
        name: Option<String>,
    },
    /// Stop a loaded module.
    Unload {
        /// Module name.
        name: String,
    },
    /// Stop a module and start it again, so it reads its configuration
    /// (`[modules.NAME]` of config.toml) anew.
    Restart {
        /// Module name.
        name: String,
    },
    /// Print the functions MODULE declares, one per line (for completion).
    /// After the name comes its signature, `(args) -> result`, if declared.
    Functions {
        /// Module name.
        module: String,
    },
    /// Install, remove and list modules in the user modules dir (no server needed).
    ///
    /// The user modules dir is the first of the server's modules dirs: the
    /// first --modules-dir, else the first dir of $NORGOPOLIS_MODULES_DIR,
    /// else the first of `modules_dirs` in config.toml, else
    /// $XDG_DATA_HOME/norgopolis/modules.
    Module {
        #[command(subcommand)]
        command: ModuleCommand,
    },
    /// Ask the server to exit, and wait until it has.
    Shutdown {
        /// Reason recorded in the server log and sent to clients.
        #[arg(long, default_value = "requested from the norgopolis command line")]
        reason: String,
    },
}

/// `norgopolis module …`
#[derive(Debug, Subcommand)]
pub enum ModuleCommand {
    /// Copy an executable or a module folder into the user modules dir, after
    /// checking it as the server would load it (its module.toml included); or,
    /// with --cargo, build a crate with `cargo install` and install its binary.
    Install {
        /// Executable or module folder to install.
        #[arg(required_unless_present = "cargo", conflicts_with = "cargo")]
        path: Option<PathBuf>,
        /// Build and install a crate: CRATE, CRATE@VERSION, or the path of a local crate.
        #[arg(long, value_name = "CRATE[@VERSION]")]
        cargo: Option<String>,
        /// Install under this name (default: the manifest's name, else the
        /// file or folder name, else the crate's binary).
        #[arg(long)]
        name: Option<String>,
        /// Replace an installed module of the same name.
        #[arg(long)]
        force: bool,
        /// Extra arguments for `cargo install`, after `--` (e.g. `-- --locked`).
        #[arg(last = true, requires = "cargo", value_name = "CARGO_ARGS")]
        cargo_args: Vec<String>,
    },
    /// Delete a module from the user modules dir (and unload it from a running server).
    Remove {
        /// Module name.
        name: String,
    },
    /// Start a module as the server would (lean transport) and check that it
    /// follows the protocol (docs/protocol.md); prints a pass/fail table and
    /// exits non-zero when a check fails. Checks needing the conformance
    /// functions (echo, count, fail, sleep, big) are skipped when it lacks them.
    Check {
        /// Module name (looked up in the modules dirs), or a path to its executable or folder.
        target: String,
        /// Size limit of messages to test up to, in bytes (the server's max_message_size).
        #[arg(long, default_value_t = 64 << 20)]
        max_message_size: usize,
    },
    /// List the modules installed in the modules dirs, with their manifests.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
    },
}
