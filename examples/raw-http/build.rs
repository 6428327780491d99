fn main() {
    // Link with the proxy adapter: the component then imports only the
    // `wasi:http/proxy` world, like components made by other toolchains.
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("wasi") {
        println!("cargo:rustc-link-arg=--wasi-adapter=proxy");
    }
}
