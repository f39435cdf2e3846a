-- The version of norgopolis: the workspace version in Cargo.toml, which the
-- native library, the server and the CLI report too. spec/version_spec.lua
-- keeps this copy equal to Cargo.toml's, so a release bumps both at once.
return "0.1.0"
