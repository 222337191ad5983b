//! Fuzzes the deploy-config parser: any text must give `Ok`/`Err` (never a panic), and every
//! accepted deployment must keep its paths inside the repository and survive a JSON round trip.
#![no_main]

use std::path::Path;

use doco_config::DeployConfig;
use doco_config::resolve::parse_deploy_file;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(entries) = parse_deploy_file(text, Path::new(".doco-cd.yml")) else {
        return;
    };
    for config in entries.into_iter().flatten() {
        assert!(
            !config.working_dir.starts_with('/') && !config.working_dir.split('/').any(|c| c == ".."),
            "working_dir escapes: {:?}",
            config.working_dir
        );
        for file in &config.compose_files {
            assert!(
                !file.starts_with('/') && !file.split('/').any(|c| c == ".."),
                "compose file escapes: {file:?}"
            );
        }
        let json = serde_json::to_string(&config).expect("serializable");
        let back: DeployConfig = serde_json::from_str(&json).expect("round trip");
        assert_eq!(back.hash(), config.hash(), "{json}");
    }
});
