//! Finds libkiln.so: KILN_LIB_DIR (a directory holding it), else KILN_PREFIX (an install prefix),
//! else `pkg-config --variable=libdir kiln` (kiln.pc, installed with kiln). Hands the directory to
//! dependent crates as DEP_KILN_LIB_DIR so that they can embed it as an rpath.
use std::env;
use std::path::{Path, PathBuf};
use std::process::Command;

const LIBDIRS: [&str; 4] = [
    "lib",
    "lib64",
    "lib/x86_64-linux-gnu",
    "lib/aarch64-linux-gnu",
];

fn has_lib(dir: &Path) -> bool {
    dir.join("libkiln.so").exists()
}

fn from_pkg_config() -> Option<PathBuf> {
    let out = Command::new("pkg-config")
        .args(["--variable=libdir", "kiln"])
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if has_lib(&dir) {
        Some(dir)
    } else {
        None
    }
}

fn find_lib_dir() -> Result<PathBuf, String> {
    if let Ok(dir) = env::var("KILN_LIB_DIR") {
        let dir = PathBuf::from(dir);
        return if has_lib(&dir) {
            Ok(dir)
        } else {
            Err(format!(
                "KILN_LIB_DIR={} holds no libkiln.so",
                dir.display()
            ))
        };
    }
    if let Ok(prefix) = env::var("KILN_PREFIX") {
        let prefix = PathBuf::from(prefix);
        return LIBDIRS
            .iter()
            .map(|d| prefix.join(d))
            .find(|d| has_lib(d))
            .ok_or_else(|| {
                format!(
                    "KILN_PREFIX={} holds no libkiln.so under {:?}",
                    prefix.display(),
                    LIBDIRS
                )
            });
    }
    from_pkg_config().ok_or_else(|| {
        "libkiln.so not found: set KILN_LIB_DIR (the directory holding libkiln.so) or KILN_PREFIX \
         (kiln's install prefix), or install kiln where pkg-config finds kiln.pc"
            .to_string()
    })
}

fn main() {
    println!("cargo:rerun-if-env-changed=KILN_LIB_DIR");
    println!("cargo:rerun-if-env-changed=KILN_PREFIX");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");
    match find_lib_dir() {
        Ok(dir) => {
            println!("cargo:rustc-link-search=native={}", dir.display());
            println!("cargo:rustc-link-lib=dylib=kiln");
            println!("cargo:rustc-link-arg=-Wl,-rpath,{}", dir.display());
            println!("cargo:lib_dir={}", dir.display());
        }
        Err(message) => panic!("kiln-sys: {}", message),
    }
}
