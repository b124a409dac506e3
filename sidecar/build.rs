//! Compiles the Open Inference Protocol's ModelInfer messages (proto/grpc_predict_v2.proto) for
//! the enriching sidecar's gRPC port. protoc comes from protoc-bin-vendored, as in core/.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/grpc_predict_v2.proto";
    println!("cargo:rerun-if-changed={proto}");
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // `bytes` fields as `Bytes`: raw tensors are sliced, not copied.
    config.bytes(["."]);
    config.compile_protos(&[proto], &["proto"])?;
    Ok(())
}
