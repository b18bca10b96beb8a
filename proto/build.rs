//! Generates the etcdmon.v1 messages and services with protoc (Debian `protobuf-compiler`,
//! or `PROTOC`).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("etcdmon_v1_descriptor.bin"))
        .compile_protos(
            &[
                "etcdmon/v1/events.proto",
                "etcdmon/v1/agent.proto",
                "etcdmon/v1/stream.proto",
            ],
            &["."],
        )?;
    Ok(())
}
