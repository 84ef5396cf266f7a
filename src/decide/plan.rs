//! The minimal re-run plan of a phase: the processors whose tables miss rows, plus every
//! processor downstream of them (their inputs change), in waves in dependency order. Nothing
//! upstream that is complete runs again: the original re-ran all five Phase 4 processors
//! whatever was missing.

use std::collections::{BTreeMap, BTreeSet};

/// One processor as the planner sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    pub name: String,
    pub depends_on: Vec<String>,
}

impl From<&crate::api::phase::Processor> for Node {
    fn from(p: &crate::api::phase::Processor) -> Self {
        Self {
            name: p.name.clone(),
            depends_on: p.depends_on.clone(),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("processor {processor} depends on {dependency}, which is not in this phase")]
    UnknownDependency {
        processor: String,
        dependency: String,
    },
    #[error("the dependencies form a cycle through {0}")]
    Cycle(String),
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Plan {
    /// Waves to run in order; each waits for the tables of the one before.
    pub waves: Vec<Vec<String>>,
    /// Processors that need a re-run but cannot get one, with the reason: they, or a
    /// processor upstream of them, have no attempts left.
    pub blocked: BTreeMap<String, String>,
}

/// Plans the re-runs for `missing` (processors whose tables lack rows). `exhausted` are the
/// processors with no attempts left. Waves keep the processors' order in the spec.
pub fn plan(
    nodes: &[Node],
    missing: &BTreeSet<String>,
    exhausted: &BTreeSet<String>,
) -> Result<Plan, PlanError> {
    let depth = depths(nodes)?;
    // Everything downstream of a missing processor runs again too: walk in depth order, so
    // a processor's dependencies are decided before it.
    let mut by_depth: Vec<&Node> = nodes.iter().collect();
    by_depth.sort_by_key(|n| depth[n.name.as_str()]);
    let mut rerun: BTreeSet<&str> = BTreeSet::new();
    let mut blocked: BTreeMap<String, String> = BTreeMap::new();
    for node in &by_depth {
        let name = node.name.as_str();
        let upstream_changes = node
            .depends_on
            .iter()
            .any(|d| rerun.contains(d.as_str()) || blocked.contains_key(d.as_str()));
        if !missing.contains(name) && !upstream_changes {
            continue;
        }
        let blocked_upstream = node
            .depends_on
            .iter()
            .find(|d| blocked.contains_key(d.as_str()));
        if let Some(dependency) = blocked_upstream {
            blocked.insert(
                name.to_owned(),
                format!("{dependency} upstream cannot be re-run"),
            );
        } else if exhausted.contains(name) {
            blocked.insert(name.to_owned(), "no attempts left".to_owned());
        } else {
            rerun.insert(name);
        }
    }
    // A processor's wave: one after the latest wave among its re-run dependencies.
    let mut wave_of: BTreeMap<&str, usize> = BTreeMap::new();
    for node in &by_depth {
        let name = node.name.as_str();
        if !rerun.contains(name) {
            continue;
        }
        let wave = node
            .depends_on
            .iter()
            .filter_map(|d| wave_of.get(d.as_str()))
            .map(|w| w + 1)
            .max()
            .unwrap_or(0);
        wave_of.insert(name, wave);
    }
    let count = wave_of.values().max().map_or(0, |w| w + 1);
    let mut waves = vec![Vec::new(); count];
    for node in nodes {
        if let Some(w) = wave_of.get(node.name.as_str()) {
            waves[*w].push(node.name.clone());
        }
    }
    Ok(Plan { waves, blocked })
}

/// Each processor's depth in the graph (0: no dependencies); fails on an unknown
/// dependency or a cycle.
fn depths(nodes: &[Node]) -> Result<BTreeMap<&str, usize>, PlanError> {
    let by_name: BTreeMap<&str, &Node> = nodes.iter().map(|n| (n.name.as_str(), n)).collect();
    for node in nodes {
        if let Some(unknown) = node
            .depends_on
            .iter()
            .find(|d| !by_name.contains_key(d.as_str()))
        {
            return Err(PlanError::UnknownDependency {
                processor: node.name.clone(),
                dependency: unknown.clone(),
            });
        }
    }
    let mut depth: BTreeMap<&str, usize> = BTreeMap::new();
    // Relax until nothing changes; more rounds than nodes means a cycle.
    for _ in 0..=nodes.len() {
        let mut changed = false;
        for node in nodes {
            let d = node
                .depends_on
                .iter()
                .map(|dep| depth.get(dep.as_str()).map_or(1, |x| x + 1))
                .max()
                .unwrap_or(0);
            if depth.get(node.name.as_str()) != Some(&d) {
                depth.insert(node.name.as_str(), d);
                changed = true;
            }
        }
        if !changed {
            return Ok(depth);
        }
    }
    let deepest = depth
        .iter()
        .max_by_key(|(_, d)| **d)
        .map(|(n, _)| (*n).to_owned())
        .unwrap_or_default();
    Err(PlanError::Cycle(deepest))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(name: &str, deps: &[&str]) -> Node {
        Node {
            name: name.into(),
            depends_on: deps.iter().map(|d| (*d).to_owned()).collect(),
        }
    }

    /// The original's Phase 4 graph.
    fn phase4() -> Vec<Node> {
        vec![
            node("TeamDefenseZoneAnalysis", &[]),
            node("PlayerShotZoneAnalysis", &[]),
            node("PlayerDailyCache", &[]),
            node(
                "PlayerCompositeFactors",
                &[
                    "TeamDefenseZoneAnalysis",
                    "PlayerShotZoneAnalysis",
                    "PlayerDailyCache",
                ],
            ),
            node(
                "MLFeatureStore",
                &[
                    "TeamDefenseZoneAnalysis",
                    "PlayerShotZoneAnalysis",
                    "PlayerDailyCache",
                    "PlayerCompositeFactors",
                ],
            ),
        ]
    }

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn waves(nodes: &[Node], missing: &[&str]) -> Vec<Vec<String>> {
        plan(nodes, &set(missing), &BTreeSet::new()).unwrap().waves
    }

    #[test]
    fn a_single_missing_table_reruns_it_and_what_is_downstream_in_order() {
        assert_eq!(
            waves(&phase4(), &["PlayerDailyCache"]),
            [
                vec!["PlayerDailyCache"],
                vec!["PlayerCompositeFactors"],
                vec!["MLFeatureStore"]
            ]
        );
        // A leaf reruns alone.
        assert_eq!(
            waves(&phase4(), &["MLFeatureStore"]),
            [vec!["MLFeatureStore"]]
        );
    }

    #[test]
    fn a_missing_root_of_a_chain_reruns_the_chain() {
        let chain = [
            node("a", &[]),
            node("b", &["a"]),
            node("c", &["b"]),
            node("x", &[]),
        ];
        assert_eq!(waves(&chain, &["a"]), [vec!["a"], vec!["b"], vec!["c"]]);
    }

    #[test]
    fn a_diamond_joins_after_both_sides() {
        let diamond = [
            node("top", &[]),
            node("left", &["top"]),
            node("right", &["top"]),
            node("bottom", &["left", "right"]),
        ];
        assert_eq!(
            waves(&diamond, &["top"]),
            [vec!["top"], vec!["left", "right"], vec!["bottom"]]
        );
        assert_eq!(waves(&diamond, &["left"]), [vec!["left"], vec!["bottom"]]);
    }

    #[test]
    fn all_missing_runs_everything_by_depth_and_none_missing_runs_nothing() {
        let all = set(&[
            "TeamDefenseZoneAnalysis",
            "PlayerShotZoneAnalysis",
            "PlayerDailyCache",
            "PlayerCompositeFactors",
            "MLFeatureStore",
        ]);
        let p = plan(&phase4(), &all, &BTreeSet::new()).unwrap();
        assert_eq!(
            p.waves,
            [
                vec![
                    "TeamDefenseZoneAnalysis",
                    "PlayerShotZoneAnalysis",
                    "PlayerDailyCache"
                ],
                vec!["PlayerCompositeFactors"],
                vec!["MLFeatureStore"]
            ]
        );
        assert_eq!(
            plan(&phase4(), &BTreeSet::new(), &BTreeSet::new()).unwrap(),
            Plan::default()
        );
    }

    #[test]
    fn an_upstream_without_attempts_left_blocks_what_depends_on_it() {
        let p = plan(
            &phase4(),
            &set(&["PlayerDailyCache", "PlayerShotZoneAnalysis"]),
            &set(&["PlayerDailyCache"]),
        )
        .unwrap();
        // The shot zones can still be re-run; everything needing the daily cache cannot.
        assert_eq!(p.waves, [vec!["PlayerShotZoneAnalysis"]]);
        assert_eq!(
            p.blocked.keys().collect::<Vec<_>>(),
            [
                "MLFeatureStore",
                "PlayerCompositeFactors",
                "PlayerDailyCache"
            ]
        );
        assert_eq!(p.blocked["PlayerDailyCache"], "no attempts left");
        assert_eq!(
            p.blocked["PlayerCompositeFactors"],
            "PlayerDailyCache upstream cannot be re-run"
        );
    }

    #[test]
    fn unknown_dependencies_and_cycles_are_errors() {
        assert_eq!(
            plan(&[node("a", &["ghost"])], &set(&["a"]), &BTreeSet::new()),
            Err(PlanError::UnknownDependency {
                processor: "a".into(),
                dependency: "ghost".into()
            })
        );
        let cycle = [node("a", &["b"]), node("b", &["a"])];
        assert!(matches!(
            plan(&cycle, &set(&["a"]), &BTreeSet::new()),
            Err(PlanError::Cycle(_))
        ));
    }
}
