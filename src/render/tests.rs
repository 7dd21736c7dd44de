use super::*;
use crate::config::Config;

fn default_inputs() -> RenderInputs {
    RenderInputs::from_config(&Config::default())
}

#[test]
fn default_config_renders() {
    let manifests = render(&default_inputs()).unwrap();
    let files: Vec<_> = manifests.iter().map(|m| m.file.as_str()).collect();
    assert_eq!(files.len(), 10, "{files:?}");
}
