//! The fuzz run of bench/fuzz.sh: `fuzz [TARGET|all] [N] [SEED]` runs each parser of outside input on N inputs
//! (src/fuzz.rs) and prints, per target, how many it tried, accepted and found (panics, multi-line errors), with
//! the first findings. Exit 1 when anything was found.

use std::time::Instant;

use ade_prep::fuzz;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let which = args.first().map_or("all", String::as_str);
    let n: u64 = args.get(1).and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let seed: u64 = args.get(2).and_then(|s| s.parse().ok()).unwrap_or(24);
    let targets: Vec<fuzz::Target> =
        fuzz::targets().into_iter().filter(|t| which == "all" || t.name == which).collect();
    if targets.is_empty() {
        let names: Vec<&str> = fuzz::targets().iter().map(|t| t.name).collect();
        eprintln!("fuzz: no target {which}; targets: {}", names.join(" "));
        std::process::exit(2);
    }
    // A panic is a finding, counted and shown below: not printed as it happens.
    std::panic::set_hook(Box::new(|_| {}));
    let mut any = false;
    println!("{:<16} {:>10} {:>10} {:>6} {:>8}", "target", "tried", "accepted", "found", "seconds");
    for t in &targets {
        let start = Instant::now();
        let f = fuzz::run(t, n, seed);
        println!(
            "{:<16} {:>10} {:>10} {:>6} {:>8.1}",
            t.name,
            f.tried,
            f.accepted,
            f.found,
            start.elapsed().as_secs_f64()
        );
        for (i, what) in &f.findings {
            println!("  input {i} (seed {seed}): {what}");
        }
        any |= f.found > 0;
    }
    std::process::exit(i32::from(any));
}
