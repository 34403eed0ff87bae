//! Compiles `proto/sluice/v1/*.proto` with the vendored `protoc`, so a fresh
//! machine needs no system protobuf compiler.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/sluice/v1/records.proto",
        "proto/sluice/v1/admin.proto",
        "proto/sluice/v1/tail.proto",
        "proto/sluice/v1/scheduler.proto",
        "proto/sluice/v1/node.proto",
        "proto/sluice/v1/query.proto",
    ];
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    // Deterministic encodings: maps as BTreeMap (the wire fixtures compare
    // bytes), line text as `Bytes` (decoded without a copy).
    config.btree_map(["."]);
    config.bytes([".sluice.v1.Line.text"]);
    tonic_prost_build::configure().compile_with_config(config, &protos, &["proto"])?;
    Ok(())
}
