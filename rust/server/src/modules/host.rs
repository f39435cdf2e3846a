//! The module table: which modules run, loading them on first use, and
//! stopping them.

use std::{
    collections::HashMap,
    path::{Path, PathBuf},
    sync::{Arc, Mutex},
    time::Duration,
};

use norgopolis_proto::v1::{ModuleInfo, ModuleStatus};
use tonic::Status;

use super::{
    instance::{InFlight, Instance},
    locate::{self, LocateError, Located},
    spawner::Spawner,
};

/// One module name's slot. The async `loading` mutex serialises starts, so
/// concurrent first calls start one process; `current` is only held for a
/// clone, so calls and `Status` never wait behind a start.
#[derive(Default)]
struct Slot {
    loading: tokio::sync::Mutex<()>,
    current: Mutex<Option<Arc<Instance>>>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Instance>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn alive(&self) -> Option<Arc<Instance>> {
        self.current().filter(|i| i.is_alive())
    }

    fn set(&self, inst: Option<Arc<Instance>>) -> Option<Arc<Instance>> {
        match self.current.lock() {
            Ok(mut c) => std::mem::replace(&mut *c, inst),
            Err(_) => None,
        }
    }
}

/// Runs modules and hands out their call streams.
pub struct ModuleHost {
    dirs: Vec<PathBuf>,
    socket: PathBuf,
    spawner: Spawner,
    max_message_size: usize,
    grace: Duration,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
}

fn to_status(e: LocateError) -> Status {
    match e {
        LocateError::NotFound { .. } => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

impl ModuleHost {
    /// A host searching `dirs`; modules are told `socket` as the server's.
    pub fn new(
        dirs: Vec<PathBuf>,
        socket: PathBuf,
        max_message_size: usize,
        grace: Duration,
    ) -> std::io::Result<Self> {
        Ok(ModuleHost {
            dirs,
            socket,
            spawner: Spawner::start()?,
            max_message_size,
            grace,
            slots: Mutex::new(HashMap::new()),
        })
    }

    /// The modules dirs, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.dirs
    }

    fn existing_slot(&self, name: &str) -> Option<Arc<Slot>> {
        self.slots.lock().ok()?.get(name).cloned()
    }

    fn slot(&self, name: &str) -> Arc<Slot> {
        match self.slots.lock() {
            Ok(mut slots) => slots.entry(name.to_string()).or_default().clone(),
            // A panic elsewhere poisoned the table; a private slot still works.
            Err(_) => Arc::new(Slot::default()),
        }
    }

    /// The running instance of `name`, starting it if needed. `name` must
    /// already be validated.
    pub async fn get(&self, name: &str) -> Result<Arc<Instance>, Status> {
        if let Some(inst) = self.existing_slot(name).and_then(|s| s.alive()) {
            return Ok(inst);
        }
        let located = locate::locate(name, &self.dirs).map_err(to_status)?;
        self.load_located(located).await.map(|(inst, _)| inst)
    }

    /// Starts `located` unless an instance of that name runs; returns the
    /// instance and whether it was already running.
    pub async fn load_located(&self, located: Located) -> Result<(Arc<Instance>, bool), Status> {
        let slot = self.slot(&located.name);
        let _loading = slot.loading.lock().await;
        if let Some(inst) = slot.alive() {
            return Ok((inst, true));
        }
        let inst = Instance::start(
            located,
            &self.spawner,
            &self.socket,
            self.max_message_size,
            self.grace,
        )
        .await?;
        slot.set(Some(inst.clone()));
        Ok((inst, false))
    }

    /// Loads by name, or from an explicit path (registered under `name`, or
    /// the path's file name).
    pub async fn load(
        &self,
        name: &str,
        path: Option<&Path>,
    ) -> Result<(Arc<Instance>, bool), Status> {
        let located = match path {
            None => {
                norgopolis_common::validate_module_name(name)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                locate::locate(name, &self.dirs).map_err(to_status)?
            }
            Some(path) => {
                let name = if name.is_empty() {
                    path.file_name()
                        .and_then(|f| f.to_str())
                        .unwrap_or_default()
                        .to_string()
                } else {
                    name.to_string()
                };
                norgopolis_common::validate_module_name(&name)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                locate::at_path(&name, path)
                    .map_err(to_status)?
                    .ok_or_else(|| Status::not_found(format!("no module at {}", path.display())))?
            }
        };
        self.load_located(located).await
    }

    /// Stops `name` if it runs; returns whether it did.
    pub async fn unload(&self, name: &str) -> bool {
        let Some(slot) = self.existing_slot(name) else {
            return false;
        };
        let _loading = slot.loading.lock().await;
        match slot.set(None) {
            Some(inst) => {
                let was_running = inst.is_alive();
                inst.stop().await;
                was_running
            }
            None => false,
        }
    }

    /// Starts a call on `name`.
    pub async fn invoke(
        &self,
        name: &str,
        function: String,
        args: Vec<u8>,
    ) -> Result<
        (
            Arc<Instance>,
            tonic::Streaming<norgopolis_proto::module_communication::MessagePack>,
            InFlight,
        ),
        Status,
    > {
        let inst = self.get(name).await?;
        let (stream, guard) = inst.invoke(function, args).await?;
        Ok((inst, stream, guard))
    }

    fn instances(&self) -> Vec<Arc<Instance>> {
        let slots: Vec<Arc<Slot>> = match self.slots.lock() {
            Ok(s) => s.values().cloned().collect(),
            Err(_) => vec![],
        };
        slots.iter().filter_map(|s| s.current()).collect()
    }

    /// Snapshots of loaded modules (exited ones included until replaced).
    pub fn statuses(&self) -> Vec<ModuleStatus> {
        let mut all: Vec<ModuleStatus> = self.instances().iter().map(|i| i.status()).collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Modules on disk merged with the loaded ones.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let loaded: HashMap<String, bool> = self
            .instances()
            .iter()
            .map(|i| (i.name.clone(), i.is_alive()))
            .collect();
        let mut infos: Vec<ModuleInfo> = locate::scan(&self.dirs)
            .into_iter()
            .map(|(name, found)| {
                let mut info = ModuleInfo {
                    loaded: loaded.get(&name).copied().unwrap_or(false),
                    name,
                    ..Default::default()
                };
                match found {
                    Ok(l) => {
                        info.path = l.origin.display().to_string();
                        if let Some(m) = l.manifest {
                            info.version = m.version;
                            info.description = m.description;
                            info.functions =
                                m.functions.iter().map(|f| f.name().to_string()).collect();
                            info.dependencies = m.dependencies;
                            info.autostart = m.autostart;
                        }
                    }
                    Err(e) => info.error = e.to_string(),
                }
                info
            })
            .collect();
        // Modules loaded by path are not in the dirs; list them too.
        for inst in self.instances() {
            if inst.is_alive() && !infos.iter().any(|i| i.name == inst.name) {
                infos.push(ModuleInfo {
                    name: inst.name.clone(),
                    path: inst.located.origin.display().to_string(),
                    loaded: true,
                    ..Default::default()
                });
            }
        }
        infos
    }

    /// Stops every module, all at once, each within its grace periods.
    pub async fn stop_all(&self) {
        let all = self.instances();
        futures::future::join_all(all.iter().map(|i| i.stop())).await;
    }
}
