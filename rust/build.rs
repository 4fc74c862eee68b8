//! Compiles proto/ into prost messages and tonic services with protox, a
//! pure-Rust protobuf compiler, so building needs no `protoc` on the machine.
//! The encoded descriptor set is kept for the reflection service.

use std::{env, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = ["proto/grpc_service.proto", "proto/model_config.proto"];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let fds = protox::compile(protos, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    std::fs::write(
        out_dir.join("inference_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Tensor payloads stay `Bytes`, so requests and responses are sliced, not copied.
        .bytes(".")
        .compile_fds(fds)?;
    Ok(())
}
