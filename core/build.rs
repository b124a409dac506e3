//! Compiles quiver's subset of Feast's protobufs (core/proto) with prost.
//! protoc comes from the protoc-bin-vendored crate, so no system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/feast/types/Value.proto",
        "proto/feast/types/EntityKey.proto",
        "proto/feast/core/Registry.proto",
        "proto/feast/serving/TransformationService.proto",
    ];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    // Deterministic bytes: maps encode in key order, so equal registries serialize identically.
    config.btree_map(["."]);
    config.compile_protos(&protos, &["proto"])?;
    Ok(())
}
