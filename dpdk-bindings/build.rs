//! Generates the DPDK bindings and builds the C shim.
//!
//! `pkg-config --cflags libdpdk` is run directly (not through the pkg-config crate) because
//! the crate drops `-include rte_config.h` and `-march=...`, both of which change what the
//! headers declare. Every flag is passed, in order, to both bindgen and the C compiler.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("libdpdk")
        .output()
        .unwrap_or_else(|e| panic!("cannot run pkg-config ({e}); run scripts/setup first"));
    if !out.status.success() {
        panic!(
            "pkg-config {} libdpdk failed: {}\nlibdpdk-dev is missing: run scripts/setup (as root)",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Flags are whitespace separated; DPDK's .pc file has no quoted arguments.
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

fn main() {
    println!("cargo:rerun-if-changed=src/shim.c");
    println!("cargo:rerun-if-changed=src/shim.h");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=PKG_CONFIG_PATH");

    let cflags = pkg_config(&["--cflags"]);
    let libs = pkg_config(&["--libs"]);

    // The shim: non-inline wrappers around DPDK's static-inline functions and macros.
    let mut cc = cc::Build::new();
    cc.file("src/shim.c")
        .include("src")
        .opt_level(3)
        .warnings(true);
    for flag in &cflags {
        cc.flag(flag);
    }
    cc.compile("dpdk_shim");

    for lib in &libs {
        if let Some(dir) = lib.strip_prefix("-L") {
            println!("cargo:rustc-link-search=native={dir}");
        } else if let Some(name) = lib.strip_prefix("-l") {
            println!("cargo:rustc-link-lib=dylib={name}");
        }
        // -Wl,--as-needed and friends: rustc already links --as-needed on Linux.
    }
    // The ring PMD's rte_eth_from_rings (in-process traffic): a driver library, which the
    // shared libdpdk.pc leaves to the plugin loader.
    println!("cargo:rustc-link-lib=dylib=rte_net_ring");

    let bindings = bindgen::Builder::default()
        .header("src/shim.h")
        .clang_args(&cflags)
        .clang_arg("-Isrc")
        .allowlist_function(
            "rte_eal_.*|rte_strerror|rte_pktmbuf_.*|rte_mempool_.*|rte_eth_.*|rte_ring_(create|free|lookup)\
             |rte_lcore_.*|rte_get_.*|rte_socket_id|rte_malloc.*|rte_zmalloc.*|rte_free\
             |rte_memzone_.*|rte_delay_us_block|shim_.*",
        )
        .allowlist_type("rte_mbuf|rte_mempool|rte_eth_.*|rte_ring|rte_memzone")
        .allowlist_var(
            "RTE_MAX_LCORE|RTE_MAX_ETHPORTS|RTE_PKTMBUF_HEADROOM|RTE_MBUF_DEFAULT_BUF_SIZE\
             |RTE_ETH_MQ_.*|RTE_ETHER_ADDR_LEN|RTE_MEMZONE_NAMESIZE|RTE_RING_NAMESIZE\
             |RTE_MEMPOOL_CACHE_MAX_SIZE|RING_F_.*|SOCKET_ID_ANY|LCORE_ID_ANY|MEMPOOL_F_.*\
             |RTE_ETH_LINK_.*|RTE_MEMZONE_.*",
        )
        // Packed structs holding aligned members, and types without Debug: see DPDK-NOTES.
        .opaque_type("rte_arp_ipv4|rte_arp_hdr|rte_l2tpv2_combined_msg_hdr|rte_gtp_psc_generic_hdr")
        .default_enum_style(bindgen::EnumVariation::Consts)
        .derive_default(true)
        .derive_debug(true)
        .prepend_enum_name(false)
        .layout_tests(true)
        .generate_comments(false)
        .parse_callbacks(Box::new(bindgen::CargoCallbacks::new()))
        .generate()
        .expect("bindgen failed on the DPDK headers");

    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR is set by cargo"));
    bindings
        .write_to_file(out.join("bindings.rs"))
        .expect("cannot write bindings.rs");
}
