//! Generates the gRPC API from `proto/nfhost/v1/nfhost.proto` with protox (a pure-Rust
//! protobuf compiler, so no `protoc` is needed) and tonic's prost code generator. The
//! encoded file descriptor set is kept for gRPC server reflection.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto = proto_root.join("nfhost/v1/nfhost.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("nfhost_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // No `connect` helpers on the clients: they need tonic's transport, which a
    // schema crate does not choose; a client builds its own Channel.
    tonic_prost_build::configure()
        .build_transport(false)
        .type_attribute(".nfhost.v1", "#[derive(serde::Serialize)]")
        .compile_fds(fds)?;
    Ok(())
}
