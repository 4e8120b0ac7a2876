//! Generates the gRPC code from `proto/vnc.proto`, with the file descriptor set that the
//! reflection service serves. protoc comes from the protoc-bin-vendored crate, so no
//! system package is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc_bin_vendored::protoc_bin_path()?);
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("vnc_descriptor.bin"))
        .compile_with_config(config, &["proto/vnc.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto/vnc.proto");
    Ok(())
}
