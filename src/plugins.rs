//! Plugins from config: directories that bundle skills (`skills/*/SKILL.md`)
//! and MCP servers (`.mcp.json`), in the layout Claude Code plugins use.

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// One entry of `plugins` in config. Only local directories exist today; the
/// tag leaves room for marketplace sources without changing the shape.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum PluginConfig {
    Local { path: PathBuf },
}

/// A plugin directory and the name its skills and servers are reported under.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plugin {
    pub name: String,
    pub dir: PathBuf,
}

impl PluginConfig {
    /// Resolves the plugin's directory and name. The name comes from
    /// `.claude-plugin/plugin.json` when present (what the plugin calls
    /// itself), else from the directory name.
    pub fn resolve(&self) -> Plugin {
        let PluginConfig::Local { path } = self;
        let dir = path.clone();
        let name = manifest_name(&dir).unwrap_or_else(|| {
            dir.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| dir.display().to_string())
        });
        Plugin { name, dir }
    }
}

fn manifest_name(dir: &Path) -> Option<String> {
    #[derive(Deserialize)]
    struct Manifest {
        name: String,
    }
    let text = std::fs::read_to_string(dir.join(".claude-plugin/plugin.json")).ok()?;
    match serde_json::from_str::<Manifest>(&text) {
        Ok(m) if !m.name.trim().is_empty() => Some(m.name.trim().to_owned()),
        Ok(_) => None,
        Err(e) => {
            tracing::warn!(plugin = %dir.display(), error = %e, "ignoring unreadable plugin.json");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_shape_is_tagged_by_type() {
        let p: PluginConfig = serde_yaml::from_str("{type: local, path: /opt/plug}").unwrap();
        assert_eq!(
            p,
            PluginConfig::Local {
                path: PathBuf::from("/opt/plug")
            }
        );
        assert!(serde_yaml::from_str::<PluginConfig>("{type: git, path: x}").is_err());
    }

    #[test]
    fn name_comes_from_manifest_then_directory() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("my-plugin");
        std::fs::create_dir_all(dir.join(".claude-plugin")).unwrap();
        let cfg = PluginConfig::Local { path: dir.clone() };
        assert_eq!(cfg.resolve().name, "my-plugin");
        std::fs::write(
            dir.join(".claude-plugin/plugin.json"),
            r#"{"name": "tools"}"#,
        )
        .unwrap();
        assert_eq!(cfg.resolve().name, "tools");
    }
}
