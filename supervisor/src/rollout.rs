//! What to start and what to retire next: one plugin's instances moved toward its desired
//! replica set with at most one instance over the desired count (max surge 1) and never fewer
//! ready instances than were serving (max unavailable 0). A GPU plugin rolls the other way round
//! (max surge 0, max unavailable 1), as its Deployment does on a cluster: there is no spare GPU
//! memory for a second copy of the model.
//!
//! ```text
//!  desired: generation 7 × 2          instances            next step
//!  ───────────────────────────        ─────────────        ────────────────────────────
//!                                     6✔ 6✔                start 7
//!                                     6✔ 6✔ 7…             (wait for 7 to be ready)
//!                                     6✔ 6✔ 7✔             retire one 6, start 7
//!                                     6✔ 7✔ 7…             (wait)
//!                                     6✔ 7✔ 7✔             retire the last 6: done
//! ```
//! A config change, a restart and a manifest edit are all "a new generation"; a scale change is
//! "a new count". The same [`plan`] serves every trigger. It is pure: the supervisor feeds it
//! what it observes and carries out the actions, so the rules are unit-tested here.
//!
//! Rules, in order:
//! 1. Not running (stopped, removed): retire everything at once.
//! 2. Old-generation instances that are not ready serve nobody: retire them.
//! 3. Current-generation instances beyond the desired count: retire the surplus, unready first.
//! 4. While more instances are ready than desired less the allowed unavailable, retire ready
//!    old ones (they leave routing first and linger so calls already routed to them land, then
//!    drain).
//! 5. Start current-generation instances up to the desired count, plus the allowed surge while
//!    old ones still serve.
//!
//! A current-generation instance that fails (a configuration error, a crash loop) stays in
//! phase Error and counts toward the desired set, so the old instances keep serving until the
//! next change, and the failure is reported as the plugin's error.

/// The replica set the supervisor wants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Target {
    pub generation: u64,
    pub replicas: usize,
    pub running: bool,
    /// Instances allowed beyond `replicas` during a roll.
    pub max_surge: usize,
    /// Ready instances allowed below `replicas` during a roll.
    pub max_unavailable: usize,
}

impl Target {
    /// A running target with the default roll: max surge 1, max unavailable 0.
    pub fn new(generation: u64, replicas: usize) -> Self {
        Self {
            generation,
            replicas,
            running: true,
            max_surge: 1,
            max_unavailable: 0,
        }
    }
}

/// What the planner needs to know about one instance.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Observed {
    pub generation: u64,
    /// Passing its readiness probe (and so routable, unless retiring).
    pub ready: bool,
    /// Already told to stop.
    pub retiring: bool,
}

/// One step toward the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Action {
    /// Start a new instance of the target generation.
    Start,
    /// Stop the instance at this index of the observed list. `linger`: it was serving, so it
    /// leaves routing first and is asked to stop only after calls already routed to it arrived.
    Retire { index: usize, linger: bool },
}

/// The actions that move `instances` toward `target` now; empty when nothing can be done until
/// an instance changes state.
pub fn plan(target: Target, instances: &[Observed]) -> Vec<Action> {
    let mut actions = Vec::new();
    let mut retired = vec![false; instances.len()];
    let live = |i: usize, retired: &[bool]| !instances[i].retiring && !retired[i];
    let retire = |i: usize, retired: &mut [bool], actions: &mut Vec<Action>| {
        retired[i] = true;
        actions.push(Action::Retire {
            index: i,
            linger: instances[i].ready,
        });
    };

    if !target.running {
        for i in 0..instances.len() {
            if live(i, &retired) {
                retire(i, &mut retired, &mut actions);
            }
        }
        return actions;
    }
    let current = |i: usize| instances[i].generation == target.generation;

    // 2. Old and not ready.
    for (i, instance) in instances.iter().enumerate() {
        if live(i, &retired) && !current(i) && !instance.ready {
            retire(i, &mut retired, &mut actions);
        }
    }
    // 3. Surplus of the current generation: unready ones first, then the newest.
    let mut ours: Vec<usize> = (0..instances.len())
        .filter(|&i| live(i, &retired) && current(i))
        .collect();
    ours.sort_by_key(|&i| (instances[i].ready, std::cmp::Reverse(i)));
    let surplus = ours.len().saturating_sub(target.replicas);
    for &i in ours.iter().take(surplus) {
        retire(i, &mut retired, &mut actions);
    }
    // 4. Ready old ones while more than enough are ready.
    let enough = target.replicas.saturating_sub(target.max_unavailable);
    let mut ready = (0..instances.len())
        .filter(|&i| live(i, &retired) && instances[i].ready)
        .count();
    for i in 0..instances.len() {
        if ready <= enough {
            break;
        }
        if live(i, &retired) && !current(i) {
            retire(i, &mut retired, &mut actions);
            ready -= 1;
        }
    }
    // 5. Start the missing ones, one over the count while old ones still serve.
    let mut ours = (0..instances.len())
        .filter(|&i| live(i, &retired) && current(i))
        .count();
    let old = (0..instances.len())
        .filter(|&i| live(i, &retired) && !current(i))
        .count();
    let limit = target.replicas + if old > 0 { target.max_surge } else { 0 };
    let mut total = ours + old;
    while ours < target.replicas && total < limit {
        actions.push(Action::Start);
        ours += 1;
        total += 1;
    }
    actions
}

/// Where a roll stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Progress {
    /// Every live instance is of the target generation, ready, and there are as many as wanted
    /// (or the target is stopped and nothing is live).
    Done,
    /// Instances are starting or old ones are still being replaced.
    Rolling,
    /// An instance of the target generation gave up (configuration error or crash loop).
    Failed,
}

/// How far `instances` are from `target`; `failed[i]` says instance `i` is in phase Error.
pub fn progress(target: Target, instances: &[Observed], failed: &[bool]) -> Progress {
    let live: Vec<usize> = (0..instances.len())
        .filter(|&i| !instances[i].retiring)
        .collect();
    if !target.running {
        return if live.is_empty() {
            Progress::Done
        } else {
            Progress::Rolling
        };
    }
    if live
        .iter()
        .any(|&i| instances[i].generation == target.generation && failed[i])
    {
        return Progress::Failed;
    }
    let done = live.len() == target.replicas
        && live
            .iter()
            .all(|&i| instances[i].generation == target.generation && instances[i].ready);
    if done {
        Progress::Done
    } else {
        Progress::Rolling
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(generation: u64, replicas: usize) -> Target {
        Target::new(generation, replicas)
    }

    fn gpu(generation: u64, replicas: usize) -> Target {
        Target {
            max_surge: 0,
            max_unavailable: 1,
            ..Target::new(generation, replicas)
        }
    }

    fn inst(generation: u64, ready: bool) -> Observed {
        Observed {
            generation,
            ready,
            retiring: false,
        }
    }

    /// Applies `actions` the way the supervisor does; started instances are not ready yet.
    fn apply(instances: &mut Vec<Observed>, actions: &[Action], generation: u64) {
        for action in actions {
            match *action {
                Action::Start => instances.push(inst(generation, false)),
                Action::Retire { index, .. } => instances[index].retiring = true,
            }
        }
    }

    /// Runs a roll to the end, making each started instance ready one step later, and checks
    /// the invariants at every step: never fewer ready routable instances than `replicas` less
    /// the allowed unavailable, never more live ones than `replicas` plus the allowed surge.
    fn roll(mut instances: Vec<Observed>, t: Target) -> Vec<Observed> {
        for _ in 0..20 {
            let actions = plan(t, &instances);
            apply(&mut instances, &actions, t.generation);
            let live = instances.iter().filter(|i| !i.retiring).count();
            let ready = instances.iter().filter(|i| !i.retiring && i.ready).count();
            assert!(
                live <= t.replicas + t.max_surge,
                "surge above {}: {instances:?}",
                t.max_surge
            );
            assert!(
                ready + t.max_unavailable >= t.replicas,
                "too many ready instances left early: {instances:?}"
            );
            instances.retain(|i| !i.retiring);
            if progress(t, &instances, &vec![false; instances.len()]) == Progress::Done {
                return instances;
            }
            for i in instances.iter_mut() {
                i.ready = true;
            }
        }
        panic!("the roll did not finish: {instances:?}");
    }

    #[test]
    fn one_replica_starts_the_new_one_before_retiring_the_old() {
        let t = target(2, 1);
        let mut instances = vec![inst(1, true)];
        assert_eq!(plan(t, &instances), [Action::Start]);
        instances.push(inst(2, false));
        assert_eq!(plan(t, &instances), [], "waits for readiness");
        instances[1].ready = true;
        assert_eq!(
            plan(t, &instances),
            [Action::Retire {
                index: 0,
                linger: true
            }]
        );
        instances[0].retiring = true;
        assert_eq!(plan(t, &instances), []);
        assert_eq!(
            progress(t, &instances, &[false, false]),
            Progress::Done,
            "done once the old one left routing"
        );
    }

    #[test]
    fn several_replicas_roll_one_at_a_time() {
        for replicas in 1..=4 {
            let old = vec![inst(1, true); replicas];
            let done = roll(old, target(2, replicas));
            assert_eq!(done.len(), replicas);
            assert!(done.iter().all(|i| i.generation == 2 && i.ready));
        }
    }

    #[test]
    fn gpu_plugins_replace_before_they_start() {
        // No room for a second copy: retire one old instance, then start its replacement.
        let t = gpu(2, 1);
        assert_eq!(
            plan(t, &[inst(1, true)]),
            [
                Action::Retire {
                    index: 0,
                    linger: true
                },
                Action::Start
            ]
        );
        for replicas in 1..=3 {
            let done = roll(vec![inst(1, true); replicas], gpu(2, replicas));
            assert_eq!(done.len(), replicas);
            assert!(done.iter().all(|i| i.generation == 2 && i.ready));
        }
    }

    #[test]
    fn a_new_instance_that_fails_leaves_the_old_ones_serving() {
        let t = target(2, 2);
        // The new one gave up (phase Error: not ready).
        let instances = vec![inst(1, true), inst(1, true), inst(2, false)];
        assert_eq!(plan(t, &instances), []);
        assert_eq!(
            progress(t, &instances, &[false, false, true]),
            Progress::Failed
        );
        // The next change retires the failed one at once and starts over.
        let t = target(3, 2);
        assert_eq!(
            plan(t, &instances),
            [
                Action::Retire {
                    index: 2,
                    linger: false
                },
                Action::Start
            ]
        );
    }

    #[test]
    fn old_instances_that_serve_nobody_are_replaced_at_once() {
        // First start, or every old one crashed: nothing to keep available.
        assert_eq!(plan(target(1, 2), &[]), [Action::Start, Action::Start]);
        let instances = vec![inst(1, false), inst(1, true)];
        assert_eq!(
            plan(target(2, 2), &instances),
            [
                Action::Retire {
                    index: 0,
                    linger: false
                },
                Action::Start,
                Action::Start
            ]
        );
    }

    #[test]
    fn scaling_uses_the_same_rules() {
        // Up: no old generation, so no surge is needed.
        let instances = vec![inst(1, true)];
        assert_eq!(
            plan(target(1, 3), &instances),
            [Action::Start, Action::Start]
        );
        // Down: the surplus goes, unready ones first.
        let instances = vec![inst(1, true), inst(1, false), inst(1, true)];
        assert_eq!(
            plan(target(1, 1), &instances),
            [
                Action::Retire {
                    index: 1,
                    linger: false
                },
                Action::Retire {
                    index: 2,
                    linger: true
                }
            ]
        );
        // Down while rolling: ready old ones beyond the count go first, then the roll goes on.
        let done = roll(vec![inst(1, true), inst(1, true)], target(2, 1));
        assert_eq!(
            done,
            [Observed {
                generation: 2,
                ready: true,
                retiring: false
            }]
        );
    }

    #[test]
    fn stopping_retires_everything_at_once() {
        let t = Target {
            running: false,
            ..target(1, 2)
        };
        assert_eq!(plan(t, &[]), []);
        let instances = vec![inst(1, true), inst(1, false)];
        assert_eq!(
            plan(t, &instances),
            [
                Action::Retire {
                    index: 0,
                    linger: true
                },
                Action::Retire {
                    index: 1,
                    linger: false
                }
            ]
        );
        assert_eq!(progress(t, &instances, &[false, false]), Progress::Rolling);
        assert_eq!(progress(t, &[], &[]), Progress::Done);
    }
}
