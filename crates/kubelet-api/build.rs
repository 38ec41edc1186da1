//! Generates the kubelet's device plugin (`proto/k8s/deviceplugin/v1beta1/api.proto`)
//! and PodResources (`proto/k8s/podresources/v1/api.proto`) gRPC APIs with protox (a
//! pure-Rust protobuf compiler, so no `protoc` is needed) and tonic's prost code
//! generator. Each proto package (`v1beta1`, `v1`) becomes its own file in `OUT_DIR`.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let manifest_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?);
    let proto_root = manifest_dir.join("../../proto");
    let protos = [
        proto_root.join("k8s/deviceplugin/v1beta1/api.proto"),
        proto_root.join("k8s/podresources/v1/api.proto"),
    ];
    for proto in &protos {
        println!("cargo:rerun-if-changed={}", proto.display());
    }
    let fds = protox::compile(&protos, [&proto_root])?;
    // No `connect` helpers on the clients: they need tonic's transport, which a
    // schema crate does not choose; a client builds its own Channel (for the
    // kubelet, over a Unix socket).
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(fds)?;
    Ok(())
}
