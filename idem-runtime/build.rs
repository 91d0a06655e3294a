//! Names the hidden module the attribute's expansion goes through after this crate's version
//! (`__private_0_1_0`): `idem-macros` emits the name for its own version, so a mismatched pair
//! fails to compile instead of disagreeing silently.

use std::{env, fs, path::PathBuf};

fn main() {
    let version = env::var("CARGO_PKG_VERSION").expect("cargo sets CARGO_PKG_VERSION");
    let module = idem_rules::private_module(&version);
    let source = format!(
        "/// What the attribute's expansion of idem-macros {version} uses. Not public API: the name\n\
         /// changes with every release.\n\
         #[doc(hidden)]\n\
         pub mod {module} {{\n    pub use crate::private::*;\n}}\n"
    );
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR")).join("private_module.rs");
    fs::write(out, source).expect("OUT_DIR is writable");
    println!("cargo::rerun-if-changed=build.rs");
}
