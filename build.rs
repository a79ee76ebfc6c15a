//! Compiles the gRPC contracts with a pure-Rust protobuf parser (protox), so a clean
//! clone builds without a system `protoc`; and names the source revision
//! (`WORKER_REVISION`) for `--version` and `worker_build_info`.

use std::path::Path;
use std::process::Command;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    revision();
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

/// `WORKER_REVISION` for the crate: the variable of that name when set (the image's builder has
/// no `.git`; `make docker-build` passes the commit), else the checkout's HEAD commit, else
/// `unknown`.
fn revision() {
    println!("cargo:rerun-if-env-changed=WORKER_REVISION");
    let revision = std::env::var("WORKER_REVISION")
        .ok()
        .filter(|r| !r.trim().is_empty())
        .or_else(git_head)
        .unwrap_or_else(|| "unknown".to_string());
    println!("cargo:rustc-env=WORKER_REVISION={}", revision.trim());
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
}

/// HEAD's commit, and a rerun whenever HEAD moves: a new commit, a checkout, a fetch that
/// packs the refs. Only existing files are named (cargo would rerun on every build for a
/// missing one).
fn git_head() -> Option<String> {
    let head = git(&["rev-parse", "HEAD"])?;
    let mut watched = vec![git(&["rev-parse", "--git-path", "HEAD"])];
    if let Some(branch) = git(&["symbolic-ref", "-q", "HEAD"]) {
        watched.push(git(&["rev-parse", "--git-path", &branch]));
    }
    watched.push(git(&["rev-parse", "--git-path", "packed-refs"]));
    for path in watched.into_iter().flatten() {
        if Path::new(&path).exists() {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    Some(head)
}
