//! Generates the attach protocol types (`proto/nfhost/vf/v1/attach.proto`)
//! with protox (a pure-Rust protobuf compiler, so no `protoc` is needed) and
//! prost-build.

use std::error::Error;
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let proto = proto_root.join("nfhost/vf/v1/attach.proto");
    println!("cargo:rerun-if-changed={}", proto.display());
    let fds = protox::compile([&proto], [&proto_root])?;
    prost_build::Config::new().compile_fds(fds)?;
    Ok(())
}
