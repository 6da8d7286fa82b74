//! Embeds the directory kiln-sys found libkiln.so in as an rpath of this crate's tests and examples.
fn main() {
    if let Ok(dir) = std::env::var("DEP_KILN_LIB_DIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir);
    }
}
