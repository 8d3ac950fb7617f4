//! The simulation over many seeds, with every protocol rule in force: no
//! seed may lose an acknowledged write, answer a QUORUM read with an older
//! value than one acknowledged before it, leave copies apart after the
//! faults heal, or break the map's invariants.
//!
//! - `RINGUP_SIM_SEEDS=N` runs seeds 0 to N - 1 (1000 by default), from
//!   `RINGUP_SIM_FIRST_SEED` if set;
//! - `RINGUP_SIM_SEED=N` runs seed N alone and prints its whole trace.
//!
//! A failure prints the seed and the shortest trace that shows it;
//! `RINGUP_SIM_SEED` with that seed replays it.

use ringup_sim::{Run, Settings, run};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().map(|v| v.parse().unwrap_or_else(|_| panic!("{name}={v} is not a number")))
}

#[test]
fn every_seed_keeps_every_promise() {
    if let Some(seed) = env("RINGUP_SIM_SEED") {
        let one = run(seed, Settings::default());
        println!("{}", one.trace.join("\n"));
        assert!(one.violation.is_none(), "seed {seed}: {:?}", one.violation);
        return;
    }
    let seeds = env("RINGUP_SIM_SEEDS").unwrap_or(1000);
    let first = env("RINGUP_SIM_FIRST_SEED").unwrap_or(0);
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get()) as u64;
    let started = std::time::Instant::now();
    let runs: Vec<Run> = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|t| {
                scope.spawn(move || {
                    (first + t..first + seeds)
                        .step_by(threads as usize)
                        .map(|s| run(s, Settings::default()))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        workers.into_iter().flat_map(|w| w.join().expect("a worker")).collect()
    });
    let total = runs.iter().fold((0, 0, 0, 0, 0), |t, r| {
        let c = r.counts;
        (t.0 + c.writes, t.1 + c.reads, t.2 + c.failed, t.3 + c.faults, t.4 + c.changes)
    });
    println!(
        "{seeds} seeds from {first} in {:.1} s: {} writes and {} reads acknowledged at QUORUM, {} requests failed \
         their level, {} crashes, wipes and cuts, {} membership changes",
        started.elapsed().as_secs_f64(),
        total.0,
        total.1,
        total.2,
        total.3,
        total.4
    );
    let failed: Vec<&Run> = runs.iter().filter(|r| r.violation.is_some()).collect();
    if let Some(first) = failed.first() {
        panic!(
            "{} of {seeds} seeds failed; the first, seed {}: {}\nreplay it with RINGUP_SIM_SEED={} \
             (scripts/sim.sh --seed {}); its shortest trace:\n{}",
            failed.len(),
            first.seed,
            first.violation.as_ref().expect("failed").what,
            first.seed,
            first.seed,
            first.shortest_trace()
        );
    }
}

#[test]
fn a_seed_replays_identically() {
    for seed in [3, 41, 977] {
        let (a, b) = (run(seed, Settings::default()), run(seed, Settings::default()));
        assert!(a.trace.len() > 100, "seed {seed} did something: {} trace lines", a.trace.len());
        assert_eq!(a.trace, b.trace, "seed {seed} ran two ways");
    }
}
