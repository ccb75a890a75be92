//! Compiles `proto/signer.proto` with the pure-Rust protox parser (no `protoc` needed) and
//! generates the tonic client and server code for both services.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/signer.proto");
    let descriptors = protox::compile(["signer.proto"], ["proto"])?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
