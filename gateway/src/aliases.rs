//! Aliases: other names for plugins (`spec.aliases`), and the weighted split of an alias's
//! traffic between the plugins that name it (a canary).
//!
//! ```text
//!  spec changes ─▶ backend (local: supervisor's spec version; cluster: the Plugin watch)
//!                    ─▶ AliasTable: alias ─▶ [(plugin, weight)]     (rebuilt, never per call)
//!  invoke of a name that is no plugin's id ─▶ Picker::pick (smooth weighted round robin)
//! ```
//!
//! The pick is nginx's smooth weighted round robin rather than a random draw: over any run of
//! `sum(weights)` picks each plugin gets exactly its weight, interleaved (90/10 sends one call
//! in ten to the canary, not ten in a row), and tests of the split cannot flake.

use std::collections::BTreeMap;
use std::sync::Mutex;

use bkg_core::Plugin;
use bkg_core::wire::AliasShare;

use crate::FastMap;

/// One plugin an alias routes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub plugin: String,
    pub weight: u32,
}

/// Every alias of every enabled plugin, with its targets in plugin-id order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AliasTable {
    aliases: BTreeMap<String, Vec<Target>>,
}

impl AliasTable {
    /// The table of `plugins`; a disabled plugin takes no share of its aliases.
    pub fn build<'a>(plugins: impl IntoIterator<Item = &'a Plugin>) -> Self {
        let mut aliases: BTreeMap<String, Vec<Target>> = BTreeMap::new();
        for plugin in plugins {
            if !plugin.spec.enabled {
                continue;
            }
            for alias in &plugin.spec.aliases {
                aliases.entry(alias.name.clone()).or_default().push(Target {
                    plugin: plugin.id().to_owned(),
                    weight: alias.weight,
                });
            }
        }
        for targets in aliases.values_mut() {
            targets.sort_by(|a, b| a.plugin.cmp(&b.plugin));
        }
        Self { aliases }
    }

    /// The plugins `alias` routes to, or `None` when no enabled plugin names it.
    pub fn targets(&self, alias: &str) -> Option<&[Target]> {
        self.aliases.get(alias).map(Vec::as_slice)
    }

    /// Every alias and its targets, by name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &[Target])> {
        self.aliases.iter().map(|(k, v)| (k.as_str(), v.as_slice()))
    }

    /// Percent of `alias`'s traffic that `plugin` gets (0 when it is not a target).
    pub fn percent(&self, alias: &str, plugin: &str) -> f64 {
        let Some(targets) = self.targets(alias) else {
            return 0.0;
        };
        let total: u64 = targets.iter().map(|t| u64::from(t.weight)).sum();
        let mine = targets
            .iter()
            .find(|t| t.plugin == plugin)
            .map_or(0, |t| u64::from(t.weight));
        if total == 0 {
            return 0.0;
        }
        // Rounded to a tenth of a percent: what the UI shows.
        (mine as f64 * 1000.0 / total as f64).round() / 10.0
    }

    /// Fills the real split into a plugin's alias shares (which, built from its own manifest
    /// alone, assume it is the only target).
    pub fn fill(&self, plugin: &str, shares: &mut [AliasShare]) {
        for share in shares {
            share.percent = self.percent(&share.name, plugin);
        }
    }
}

/// What `GET /api/aliases` shows of one alias.
#[derive(serde::Serialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct AliasInfo {
    /// The alias.
    pub name: String,
    /// The plugins it routes to, in id order.
    pub targets: Vec<AliasTarget>,
}

/// One plugin of an alias and its share.
#[derive(serde::Serialize, Clone, Debug, PartialEq, utoipa::ToSchema)]
pub struct AliasTarget {
    pub plugin: String,
    pub weight: u32,
    /// Percent of the alias's calls this plugin gets.
    pub percent: f64,
}

impl AliasInfo {
    /// Every alias of `table` with its split.
    pub fn list(table: &AliasTable) -> Vec<AliasInfo> {
        table
            .iter()
            .map(|(name, targets)| AliasInfo {
                name: name.to_owned(),
                targets: targets
                    .iter()
                    .map(|t| AliasTarget {
                        plugin: t.plugin.clone(),
                        weight: t.weight,
                        percent: table.percent(name, &t.plugin),
                    })
                    .collect(),
            })
            .collect()
    }
}

/// Per-alias state of the smooth weighted round robin.
#[derive(Default)]
pub struct Picker {
    state: Mutex<FastMap<String, Rotation>>,
}

/// The targets a rotation was built for and each one's running score.
struct Rotation {
    targets: Vec<Target>,
    current: Vec<i64>,
}

impl Picker {
    /// The plugin the next call of `alias` goes to, or `None` when every target has weight 0.
    /// A changed target list (a weight edited, a plugin added) starts a fresh rotation.
    pub fn pick(&self, alias: &str, targets: &[Target]) -> Option<String> {
        let total: i64 = targets.iter().map(|t| i64::from(t.weight)).sum();
        if total == 0 {
            return None;
        }
        if let [only] = targets {
            return Some(only.plugin.clone());
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let rotation = match state.get_mut(alias) {
            Some(r) if r.targets == targets => r,
            _ => {
                state.insert(
                    alias.to_owned(),
                    Rotation {
                        targets: targets.to_vec(),
                        current: vec![0; targets.len()],
                    },
                );
                state.get_mut(alias)?
            }
        };
        let mut best = 0;
        for (i, t) in rotation.targets.iter().enumerate() {
            rotation.current[i] += i64::from(t.weight);
            if rotation.current[i] > rotation.current[best] {
                best = i;
            }
        }
        rotation.current[best] -= total;
        Some(rotation.targets[best].plugin.clone())
    }

    /// Forgets rotations of aliases no longer in `table`, so their state does not pile up.
    pub fn retain(&self, table: &AliasTable) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.retain(|alias, _| table.targets(alias).is_some());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(id: &str, enabled: bool, aliases: &[(&str, u32)]) -> Plugin {
        let mut spec: bkg_core::PluginSpec =
            serde_yaml::from_str("implementation: echo").expect("spec");
        spec.enabled = enabled;
        spec.aliases = aliases
            .iter()
            .map(|(name, weight)| bkg_core::AliasSpec {
                name: (*name).to_owned(),
                weight: *weight,
            })
            .collect();
        Plugin::new(id, spec)
    }

    fn counts(
        picker: &Picker,
        table: &AliasTable,
        alias: &str,
        n: usize,
    ) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        let targets = table.targets(alias).expect("alias");
        for _ in 0..n {
            *out.entry(picker.pick(alias, targets).expect("pick"))
                .or_default() += 1;
        }
        out
    }

    #[test]
    fn a_90_10_split_is_exact_and_interleaved() {
        let plugins = [
            plugin("echo-v1", true, &[("echo-stable", 90)]),
            plugin("echo-v2", true, &[("echo-stable", 10)]),
        ];
        let table = AliasTable::build(&plugins);
        let picker = Picker::default();
        let targets = table.targets("echo-stable").expect("alias");
        let first: Vec<String> = (0..10)
            .map(|_| picker.pick("echo-stable", targets).expect("pick"))
            .collect();
        assert_eq!(
            first.iter().filter(|p| *p == "echo-v2").count(),
            1,
            "{first:?}"
        );
        let got = counts(&picker, &table, "echo-stable", 1990);
        assert_eq!(got["echo-v1"] + 9, 1800);
        assert_eq!(got["echo-v2"] + 1, 200);
        assert_eq!(table.percent("echo-stable", "echo-v1"), 90.0);
        assert_eq!(table.percent("echo-stable", "echo-v2"), 10.0);
    }

    #[test]
    fn weight_zero_and_disabled_plugins_get_nothing_and_edits_start_over() {
        let plugins = [
            plugin("a", true, &[("m", 1)]),
            plugin("b", true, &[("m", 0)]),
            plugin("c", false, &[("m", 100)]),
        ];
        let table = AliasTable::build(&plugins);
        assert_eq!(table.targets("m").map(<[Target]>::len), Some(2));
        let picker = Picker::default();
        assert_eq!(counts(&picker, &table, "m", 50)["a"], 50);
        assert_eq!(table.percent("m", "b"), 0.0);
        assert_eq!(table.percent("m", "c"), 0.0);

        // Weights edited to 1/3: the split follows at once.
        let edited = AliasTable::build(&[
            plugin("a", true, &[("m", 1)]),
            plugin("b", true, &[("m", 3)]),
        ]);
        let got = counts(&picker, &edited, "m", 400);
        assert_eq!((got["a"], got["b"]), (100, 300));
        assert_eq!(edited.percent("m", "b"), 75.0);

        let none = AliasTable::build(&[plugin("b", true, &[("m", 0)])]);
        assert_eq!(picker.pick("m", none.targets("m").expect("alias")), None);
        picker.retain(&AliasTable::default());
        assert!(picker.state.lock().expect("lock").is_empty());
    }

    #[test]
    fn shares_get_the_split_of_every_plugin() {
        let plugins = [
            plugin("minilm-a", true, &[("minilm", 2), ("solo", 5)]),
            plugin("minilm-b", true, &[("minilm", 1)]),
        ];
        let table = AliasTable::build(&plugins);
        let mut shares = bkg_core::wire::plugin_info(&plugins[0], None, Vec::new()).aliases;
        assert_eq!(
            shares[0].percent, 100.0,
            "alone, before the gateway fills it in"
        );
        table.fill("minilm-a", &mut shares);
        assert_eq!(shares[0].percent, 66.7);
        assert_eq!(shares[1].percent, 100.0);
    }
}
