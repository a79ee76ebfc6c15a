//! Compiles the gRPC contracts with a pure-Rust protobuf parser (protox), so a clean
//! clone builds without a system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "proto/common/v1/common.proto",
        "proto/reservation/v1/inventory.proto",
        "proto/reservation/worker/v1/debug.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    // Reflection serves this set; compile_fds does not write it, so write it here.
    std::fs::write(
        out.join("descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
