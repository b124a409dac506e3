//! Compiles quiver's subset of the Spark Connect protocol (offline/proto) with prost; the
//! client (src/spark/client.rs) calls it through tonic's generic gRPC client, so no service
//! code is generated. protoc comes from the protoc-bin-vendored crate, as in core/build.rs:
//! Apache's `apache-spark-connect-proto` crate would need a system protoc to build.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/spark/connect/connect.proto"];
    for p in &protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    config.bytes(["."]);
    config.compile_protos(&protos, &["proto"])?;
    Ok(())
}
