//! Compiles `proto/*.proto` with protox, so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../proto");
    let files = ["communication.proto", "module.proto", "norgopolis.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={}", dir.join(f).display());
    }
    let fds = protox::compile(files, [&dir])?;
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
