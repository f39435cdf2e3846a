//! Dependency planning: which modules must start, and in which order,
//! before a module can. Everything is checked before anything starts, so
//! a missing dependency or a cycle leaves nothing half-started.

use std::collections::HashSet;

use norgopolis_catalog::locate::{LocateError, Located};

/// A dependency as the host knows it.
pub struct Found {
    /// Where it is (for a running module: where it was loaded from).
    pub located: Located,
    /// Whether it runs already (it is checked, not started).
    pub running: bool,
}

/// Why a module's dependencies cannot be satisfied. Both name the chain
/// from the module being loaded to the problem.
#[derive(Debug, thiserror::Error)]
pub enum DepError {
    /// A module in the chain cannot be found or is broken.
    #[error("module '{}' cannot load: dependency chain {} is broken: {source}", .chain[0], .chain.join(" -> "))]
    Missing {
        /// From the module being loaded to the unusable one.
        chain: Vec<String>,
        /// Why the last one is unusable.
        source: LocateError,
    },
    /// The dependencies loop back on themselves.
    #[error("module '{}' cannot load: dependency cycle {}", .chain[0], .chain.join(" -> "))]
    Cycle {
        /// From the module being loaded around the loop (the repeated module
        /// appears twice).
        chain: Vec<String>,
    },
}

/// The modules to start for `root`, dependencies first and `root` last;
/// modules that already run are checked but left out. `lookup` finds a
/// dependency by name.
pub fn plan(
    root: Located,
    lookup: &mut dyn FnMut(&str) -> Result<Found, LocateError>,
) -> Result<Vec<Located>, DepError> {
    let mut walk = Walk {
        path: Vec::new(),
        done: HashSet::new(),
        order: Vec::new(),
        lookup,
    };
    walk.visit(root, false)?;
    Ok(walk.order)
}

struct Walk<'a> {
    path: Vec<String>,
    done: HashSet<String>,
    order: Vec<Located>,
    lookup: &'a mut dyn FnMut(&str) -> Result<Found, LocateError>,
}

impl Walk<'_> {
    fn visit(&mut self, module: Located, running: bool) -> Result<(), DepError> {
        self.path.push(module.name.clone());
        let deps = module
            .manifest
            .as_ref()
            .map(|m| m.dependencies.clone())
            .unwrap_or_default();
        for dep in deps {
            if self.path.contains(&dep) {
                // Name the whole chain from the root, so the user sees how
                // the loop is reached.
                let mut chain = self.path.clone();
                chain.push(dep);
                return Err(DepError::Cycle { chain });
            }
            if self.done.contains(&dep) {
                continue;
            }
            let found = (self.lookup)(&dep).map_err(|source| {
                let mut chain = self.path.clone();
                chain.push(dep.clone());
                DepError::Missing { chain, source }
            })?;
            self.visit(found.located, found.running)?;
        }
        self.path.pop();
        self.done.insert(module.name.clone());
        if !running {
            self.order.push(module);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, path::PathBuf};

    use super::*;
    use norgopolis_catalog::manifest::Manifest;

    fn module(name: &str, deps: &[&str]) -> Located {
        Located {
            name: name.into(),
            exec: PathBuf::from("/bin/true"),
            args: vec![],
            manifest: Some(Manifest {
                dependencies: deps.iter().map(|d| d.to_string()).collect(),
                ..Default::default()
            }),
            origin: PathBuf::from(format!("/m/{name}")),
        }
    }

    fn run(
        root: &str,
        table: &[(&str, &[&str])],
        running: &[&str],
    ) -> Result<Vec<String>, DepError> {
        let modules: HashMap<String, Located> = table
            .iter()
            .map(|(n, d)| (n.to_string(), module(n, d)))
            .collect();
        let mut lookup = |name: &str| {
            modules
                .get(name)
                .map(|l| Found {
                    located: l.clone(),
                    running: running.contains(&name),
                })
                .ok_or_else(|| LocateError::NotFound {
                    name: name.into(),
                    dirs: vec![PathBuf::from("/m")],
                })
        };
        plan(modules[root].clone(), &mut lookup)
            .map(|order| order.into_iter().map(|l| l.name).collect())
    }

    #[test]
    fn dependencies_come_first_each_once() {
        let table: &[(&str, &[&str])] = &[
            ("app", &["db", "ui"]),
            ("db", &["fs"]),
            ("ui", &["fs"]),
            ("fs", &[]),
        ];
        assert_eq!(run("app", table, &[]).unwrap(), ["fs", "db", "ui", "app"]);
        assert_eq!(run("app", table, &["db"]).unwrap(), ["fs", "ui", "app"]);
    }

    #[test]
    fn missing_dependency_names_the_chain() {
        let table: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["c"])];
        let e = run("a", table, &[]).unwrap_err();
        assert!(matches!(&e, DepError::Missing { chain, .. } if chain == &["a", "b", "c"]));
        let text = e.to_string();
        assert!(text.contains("a -> b -> c"), "{text}");
        assert!(text.contains("module 'c' not found"), "{text}");
    }

    #[test]
    fn cycles_are_refused_with_their_chain() {
        let table: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["c"]), ("c", &["b"])];
        let e = run("a", table, &[]).unwrap_err().to_string();
        assert!(e.contains("dependency cycle a -> b -> c -> b"), "{e}");
        // A loop through a module that already runs is still a loop.
        let table: &[(&str, &[&str])] = &[("a", &["b"]), ("b", &["a"])];
        let e = run("a", table, &["b"]).unwrap_err().to_string();
        assert!(e.contains("a -> b -> a"), "{e}");
    }
}
