//! Whole Feast registry protobufs (a registry file or object anyone could write): never a
//! panic, whatever the bytes; every project typed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use quiver_core::registry::RegistryFile;

fuzz_target!(|data: &[u8]| {
    if let Ok(file) = RegistryFile::decode(data)
        && let Ok(names) = file.project_names()
    {
        for p in names {
            let _ = file.project(&p);
        }
    }
});
