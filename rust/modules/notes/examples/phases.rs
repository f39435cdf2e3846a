//! Times the notes module's own work on a workspace, without the router:
//! a restart from the cache phase by phase, and `search` alone.
//!
//! `cargo run --release -p norgopolis-notes --example phases -- WORKSPACE CACHE_DIR`
//! (the workspace from `norgopolis-bench generate-notes`; a cold index is
//! made first when the cache dir holds none); further arguments are the
//! queries.

use std::{path::PathBuf, time::Instant};

use norgopolis_notes::{
    cache,
    config::{Config, Workspace},
    notes::Notes,
    scan, service,
};

fn ms(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1000.0
}

fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(root), Some(cache_dir)) = (args.next(), args.next()) else {
        eprintln!("usage: phases WORKSPACE CACHE_DIR");
        std::process::exit(2);
    };
    let config = Config {
        workspaces: vec![Workspace {
            name: "bench".into(),
            root: PathBuf::from(root).canonicalize().expect("workspace"),
        }],
        cache_dir: cache_dir.into(),
    };
    let file = cache::file(&config.cache_dir);
    if !file.exists() {
        let t = Instant::now();
        Notes::new(config.clone()).initial_index();
        println!("cold index (and save): {:.0} ms", ms(t));
    }
    for _ in 0..3 {
        let t = Instant::now();
        let bytes = std::fs::read(&file).expect("read");
        let read = ms(t);
        let t = Instant::now();
        let ix = cache::load(&file).expect("load");
        let load = ms(t);
        let t = Instant::now();
        let walked = scan::walk_stamped(&config.workspaces[0].root).expect("walk");
        let walk = ms(t);
        let t = Instant::now();
        drop(ix);
        let dropped = ms(t);
        let t = Instant::now();
        let notes = Notes::new(config.clone());
        notes.initial_index();
        let whole = ms(t);
        println!(
            "file {:.1} MB: read {read:.1} ms, load (read+decode+maps) {load:.1} ms, walk {} files {walk:.1} ms, drop {dropped:.1} ms, initial_index {whole:.1} ms (module says {:.1})",
            bytes.len() as f64 / 1e6,
            walked.len(),
            notes.timing().index_ms
        );
    }
    let notes = Notes::new(config.clone());
    notes.initial_index();
    // The bench's queries: a common word and a rarer word's first 4 letters.
    let given: Vec<String> = args.collect();
    let queries: Vec<&str> = if given.is_empty() {
        vec![
            "volo suzu",
            "misa zupe",
            "kalo rudo",
            "lolo pesu",
            "sumi kaka",
        ]
    } else {
        given.iter().map(String::as_str).collect()
    };
    let mut search = Vec::new();
    let mut results = Vec::new();
    for round in 0..40 {
        for &q in &queries {
            let t = Instant::now();
            let hits = notes.index().search(q, 20, None);
            let s = ms(t);
            let t = Instant::now();
            let encoded = service::search_results(&notes.index(), q, 20, None);
            let r = ms(t);
            if round > 0 {
                search.push(s);
                results.push(r);
            }
            assert!(encoded.len() <= hits.len().max(20));
        }
    }
    search.sort_by(f64::total_cmp);
    results.sort_by(f64::total_cmp);
    let p50 = |v: &[f64]| v[v.len() / 2];
    println!(
        "search: ranking p50 {:.3} ms (max {:.3}); ranking + results p50 {:.3} ms (max {:.3})",
        p50(&search),
        search[search.len() - 1],
        p50(&results),
        results[results.len() - 1]
    );
}
