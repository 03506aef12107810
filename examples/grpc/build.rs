//! Generates the `posts` service. protoc is the one that ships in the
//! `protoc-bin-vendored` crate, so a fresh machine needs nothing outside
//! crates.io; `PROTOC` names another (Debian's `protobuf-compiler`).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=PROTOC");
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().compile_with_config(config, &["proto/posts.proto"], &["proto"])?;
    Ok(())
}
