//! Generates the gRPC types of `proto/fleetmesh/v1/` with tonic and prost.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/fleetmesh/v1/mesh.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        .compile_protos(&protos, &["proto"])?;
    Ok(())
}
