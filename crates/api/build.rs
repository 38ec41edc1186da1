//! Generates the gRPC API from `proto/nfhost/v1/nfhost.proto` with protox (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and tonic's prost code generator. The
//! encoded file descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/nfhost/v1/nfhost.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("nfhost_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .type_attribute(".nfhost.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
