//! Compiles the inventory contract from the worker's `proto/` (the one source of the
//! contract): the simulator is the server side, and depends on nothing of the worker.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../../proto/common/v1/common.proto",
        "../../proto/reservation/v1/inventory.proto",
    ];
    for p in protos {
        println!("cargo:rerun-if-changed={p}");
    }
    let fds = protox::compile(protos, ["../../proto"])?;
    tonic_prost_build::configure().compile_fds(fds)?;
    Ok(())
}
