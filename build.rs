//! Generates the gRPC types of `proto/fleetmesh/v1/` with tonic and prost.
//!
//! `WatchResponse` is not generated: the server sends each event's pre-encoded bytes to
//! every watcher, so it uses the hand-written, wire-identical `crate::proto::WatchFrame`
//! (see `src/proto/frame.rs`), and the generated client and server speak it too.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/fleetmesh/v1/mesh.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .bytes(".")
        // Ordered maps: the model keeps labels in `BTreeMap`s, so conversions move them.
        .btree_map(".")
        .extern_path(".fleetmesh.v1.WatchResponse", "crate::proto::WatchFrame")
        .compile_protos(&protos, &["proto"])?;

    let etcd_protos = ["proto/etcd/rpc.proto", "proto/etcd/kv.proto"];
    for proto in etcd_protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    tonic_prost_build::configure()
        .build_client(false)
        .bytes(".")
        // A small request buffer: a watch call lives as long as its client.
        .codec_path("crate::etcd_api::codec::EtcdCodec")
        .extern_path(
            ".etcdserverpb.WatchResponse",
            "crate::etcd_api::wire::WatchFrame",
        )
        .compile_protos(&etcd_protos, &["proto/etcd"])?;
    Ok(())
}
