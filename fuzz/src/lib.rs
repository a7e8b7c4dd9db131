//! Fuzz targets of kinesin-core: the property checks live in [`checks`] so
//! the cargo-fuzz targets and the stable corpus replay test
//! (`core/tests/fuzz_corpus.rs`) run the same code.
#![forbid(unsafe_code)]

pub mod bento_config;
pub mod checks;
