//! The module table: which modules run, loading them (dependencies first)
//! on first use, restarting crashed ones, and stopping them.

use std::{
    collections::HashMap,
    future::Future,
    path::{Path, PathBuf},
    pin::Pin,
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex, MutexGuard, Weak,
    },
    time::{Duration, Instant},
};

use norgopolis_catalog::{
    locate::{self, LocateError, Located},
    manifest::Restart,
};
use norgopolis_proto::v1::{ModuleInfo, ModuleStatus};
use rmpv::Value;
use tonic::{Code, Status};

use super::{
    deps::{self, DepError, Found},
    idle,
    instance::{Instance, InstanceOptions},
    process::spawner::Spawner,
    restart::{self, RestartPolicy},
};
use crate::sessions::events::{topic, EventHub};

/// Why a module is being started (reported in `module.loaded` events).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cause {
    /// A call reached a module that was not running.
    Call,
    /// An explicit `Load`.
    Load,
    /// Server start (`autostart`).
    Autostart,
    /// Another module being loaded needs it.
    Dependency,
    /// The `on-failure` restart policy.
    Restart,
    /// A running process registered itself (an external module).
    Provide,
}

impl Cause {
    fn as_str(self) -> &'static str {
        match self {
            Cause::Call => "call",
            Cause::Load => "load",
            Cause::Autostart => "autostart",
            Cause::Dependency => "dependency",
            Cause::Restart => "restart",
            Cause::Provide => "provide",
        }
    }
}

/// What the host remembers about a module name across its processes.
#[derive(Default)]
struct Record {
    /// Restarts done by the restart policy since the module was last unloaded.
    restarts: u32,
    /// Restarts in the current series (reset by a stable run or a fresh load).
    streak: u32,
    /// How the last process ended.
    last_exit: String,
    /// A restart is scheduled.
    restarting: bool,
    /// Why the module could not be (re)started, and from where.
    failure: Option<(String, String)>,
}

/// One module name's slot. The async `loading` mutex serialises starts, so
/// concurrent first calls start one process; `current` is only held for a
/// clone, so calls and `Status` never wait behind a start.
#[derive(Default)]
struct Slot {
    loading: tokio::sync::Mutex<()>,
    current: Mutex<Option<Arc<Instance>>>,
    record: Mutex<Record>,
}

impl Slot {
    fn current(&self) -> Option<Arc<Instance>> {
        self.current.lock().ok().and_then(|c| c.clone())
    }

    fn alive(&self) -> Option<Arc<Instance>> {
        self.current()
            .filter(|i| i.is_alive() && !i.activity.retired())
    }

    fn holds(&self, inst: &Arc<Instance>) -> bool {
        self.current().is_some_and(|c| Arc::ptr_eq(&c, inst))
    }

    fn set(&self, inst: Option<Arc<Instance>>) -> Option<Arc<Instance>> {
        match self.current.lock() {
            Ok(mut c) => std::mem::replace(&mut *c, inst),
            Err(_) => None,
        }
    }

    fn record(&self) -> MutexGuard<'_, Record> {
        // The record holds plain counters: a panic elsewhere cannot leave it
        // inconsistent, so a poisoned lock is still usable.
        self.record.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// Runs modules and hands out their call streams.
pub struct ModuleHost {
    shared: Arc<Shared>,
}

struct Shared {
    dirs: Vec<PathBuf>,
    socket: PathBuf,
    spawner: Spawner,
    options: InstanceOptions,
    restart: Mutex<RestartPolicy>,
    slots: Mutex<HashMap<String, Arc<Slot>>>,
    events: Arc<EventHub>,
    stopping: AtomicBool,
}

fn to_status(e: LocateError) -> Status {
    match e {
        LocateError::NotFound { .. } => Status::not_found(e.to_string()),
        _ => Status::failed_precondition(e.to_string()),
    }
}

fn dep_status(e: DepError) -> Status {
    Status::failed_precondition(e.to_string())
}

fn shutting_down() -> Status {
    Status::unavailable("server is shutting down")
}

impl ModuleHost {
    /// A host searching `dirs`; modules are told `socket` as the server's
    /// and run with `options` (limits, grace periods, failure log).
    pub fn new(
        dirs: Vec<PathBuf>,
        socket: PathBuf,
        options: InstanceOptions,
    ) -> std::io::Result<Self> {
        Ok(ModuleHost {
            shared: Arc::new(Shared {
                dirs,
                socket,
                spawner: Spawner::start()?,
                options,
                restart: Mutex::new(RestartPolicy::default()),
                slots: Mutex::new(HashMap::new()),
                events: Arc::new(EventHub::default()),
                stopping: AtomicBool::new(false),
            }),
        })
    }

    /// Sets the backoff and limits of the `on-failure` restart policy.
    pub fn set_restart_policy(&self, policy: RestartPolicy) {
        if let Ok(mut p) = self.shared.restart.lock() {
            *p = policy;
        }
    }

    /// The event hub the host announces module lifecycle events on.
    pub fn events(&self) -> Arc<EventHub> {
        self.shared.events.clone()
    }

    /// The modules dirs, in search order.
    pub fn dirs(&self) -> &[PathBuf] {
        &self.shared.dirs
    }

    /// Recent module failures (crashes, protocol breakage, hangs), oldest first.
    pub fn recent_failures(&self) -> Vec<norgopolis_proto::v1::ModuleFailure> {
        self.shared.options.failures.recent()
    }

    /// Whether `pid` is the process of a module we run: its calls through
    /// the router are nested in a call of ours.
    pub fn is_module_pid(&self, pid: u32) -> bool {
        self.shared
            .instances()
            .iter()
            .any(|i| i.pid == pid && i.is_alive())
    }

    /// The running instance of `name`, starting it (and its dependencies)
    /// if needed. `name` must already be validated.
    pub async fn get(&self, name: &str) -> Result<Arc<Instance>, Status> {
        if let Some(inst) = self.shared.existing_slot(name).and_then(|s| s.alive()) {
            return Ok(inst);
        }
        let located = match locate::locate(name, &self.shared.dirs) {
            Ok(located) => located,
            // Registered by path and failed: the reason, not "no such module".
            Err(e @ LocateError::NotFound { .. }) => {
                return Err(self.failed_load(name).unwrap_or_else(|| to_status(e)))
            }
            Err(e) => return Err(to_status(e)),
        };
        self.shared
            .load_located(located, Cause::Call, None)
            .await
            .map(|(inst, _)| inst)
    }

    /// The error of the last failed `load PATH` of `name`, if that is what
    /// is known of it.
    fn failed_load(&self, name: &str) -> Option<Status> {
        let slot = self.shared.existing_slot(name)?;
        let (error, _) = slot.record().failure.clone()?;
        Some(Status::unavailable(error))
    }

    /// Loads by name, or from an explicit path (registered under `name`, or
    /// the path's file name); returns the instance and whether it already ran.
    pub async fn load(
        &self,
        name: &str,
        path: Option<&Path>,
    ) -> Result<(Arc<Instance>, bool), Status> {
        self.load_as(name, path, Cause::Load).await
    }

    /// [`ModuleHost::load`] with the cause reported in the `module.loaded` event.
    pub async fn load_as(
        &self,
        name: &str,
        path: Option<&Path>,
        cause: Cause,
    ) -> Result<(Arc<Instance>, bool), Status> {
        let located = match path {
            None => {
                norgopolis_common::validate_module_name(name)
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if let Some(inst) = self.shared.existing_slot(name).and_then(|s| s.alive()) {
                    return Ok((inst, true));
                }
                locate::locate(name, &self.shared.dirs).map_err(to_status)?
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
        let from_path = path.map(|_| located.origin.display().to_string());
        let name = located.name.clone();
        let loaded = self.shared.load_located(located, cause, None).await;
        if let (Err(e), Some(origin)) = (&loaded, from_path) {
            // Kept for the next call by name, which cannot find it on disk.
            self.shared.slot(&name).record().failure = Some((e.message().to_string(), origin));
        }
        loaded
    }

    /// Marks `name` failed (shown by `Status`) and announces it; for starts
    /// nobody waits on, like autostart.
    pub fn record_failure(&self, name: &str, error: &str) {
        let slot = self.shared.slot(name);
        let path = slot
            .current()
            .map(|i| i.located.origin.display().to_string())
            .unwrap_or_default();
        slot.record().failure = Some((error.to_string(), path));
        self.shared.events.announce(
            topic::MODULE_FAILED,
            vec![("name", name.into()), ("error", error.into())],
        );
    }

    /// Registers an external module as `name` (see `external`): refused
    /// with `AlreadyExists` while a module of that name runs (spawned or
    /// provided). `connect` builds its instance under the name's load
    /// lock, so a load or provider racing for the name waits and then
    /// finds it taken.
    pub async fn provide(
        &self,
        name: &str,
        connect: impl FnOnce(&InstanceOptions) -> Arc<Instance>,
    ) -> Result<Arc<Instance>, Status> {
        norgopolis_common::validate_module_name(name)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let slot = self.shared.slot(name);
        let _loading = slot.loading.lock().await;
        if self.shared.stopping() {
            return Err(shutting_down());
        }
        if let Some(running) = slot.alive() {
            return Err(taken(&running));
        }
        let inst = connect(&self.shared.options);
        slot.set(Some(inst.clone()));
        *slot.record() = Record::default();
        self.shared.announce_loaded(&slot, &inst, Cause::Provide);
        Ok(inst)
    }

    /// Stops `name` if it runs; returns whether it did. Forgets its restart
    /// count and any failure.
    pub async fn unload(&self, name: &str) -> bool {
        let Some(slot) = self.shared.existing_slot(name) else {
            return false;
        };
        let _loading = slot.loading.lock().await;
        *slot.record() = Record::default();
        match slot.set(None) {
            Some(inst) => {
                let was_running = inst.is_alive();
                inst.stop().await;
                was_running
            }
            None => false,
        }
    }

    /// Snapshots of known modules: loaded ones (exited ones included until
    /// replaced) and ones that failed to start.
    pub fn statuses(&self) -> Vec<ModuleStatus> {
        let mut all: Vec<ModuleStatus> = self
            .shared
            .all_slots()
            .into_iter()
            .filter_map(|(name, slot)| slot_status(&name, &slot))
            .collect();
        all.sort_by(|a, b| a.name.cmp(&b.name));
        all
    }

    /// Modules on disk merged with the loaded ones.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let instances = self.shared.instances();
        let loaded: HashMap<String, bool> = instances
            .iter()
            .map(|i| (i.name.clone(), i.is_alive()))
            .collect();
        let mut infos: Vec<ModuleInfo> = locate::scan(&self.shared.dirs)
            .into_iter()
            .map(|(name, found)| {
                let loaded = loaded.get(&name).copied().unwrap_or(false);
                match found {
                    Ok(l) => info(&l, loaded),
                    Err(e) => ModuleInfo {
                        name,
                        loaded,
                        error: e.to_string(),
                        ..Default::default()
                    },
                }
            })
            .collect();
        // Modules loaded by path are not in the dirs; list them too.
        for inst in instances {
            if !inst.is_alive() {
                continue;
            }
            let mut listed = info(&inst.located, true);
            if let Some(provided) = &inst.provided {
                // A provider shadows a module of its name on disk.
                infos.retain(|i| i.name != inst.name);
                listed.functions = provided.functions.clone();
                listed.function_docs = vec![String::new(); listed.functions.len()];
            } else if infos.iter().any(|i| i.name == inst.name) {
                continue;
            }
            infos.push(listed);
        }
        infos.sort_by(|a, b| a.name.cmp(&b.name));
        infos
    }

    /// Stops every module, all at once, each within its grace periods; no
    /// module starts or restarts afterwards.
    pub async fn stop_all(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        let slots = self.shared.all_slots();
        futures::future::join_all(slots.iter().map(|(_, slot)| async move {
            // Waits out a start in progress, which then sees `stopping`.
            let _loading = slot.loading.lock().await;
            if let Some(inst) = slot.current() {
                inst.stop().await;
            }
        }))
        .await;
    }
}

/// Manifest data of a module for `ListModules`.
fn info(l: &Located, loaded: bool) -> ModuleInfo {
    let mut info = ModuleInfo {
        name: l.name.clone(),
        path: l.origin.display().to_string(),
        loaded,
        ..Default::default()
    };
    if let Some(m) = &l.manifest {
        info.version = m.version.clone();
        info.description = m.description.clone();
        info.functions = m.functions.iter().map(|f| f.name().to_string()).collect();
        info.function_docs = m.functions.iter().map(|f| f.doc().to_string()).collect();
        info.function_args = m
            .functions
            .iter()
            .map(|f| f.args().unwrap_or_default().to_string())
            .collect();
        info.function_results = m
            .functions
            .iter()
            .map(|f| f.result().unwrap_or_default().to_string())
            .collect();
        info.dependencies = m.dependencies.clone();
        info.autostart = m.autostart;
    }
    info
}

/// Why a process ended cleanly, for `module.exited`: `idle` (idle unload),
/// `stop` (unload, shutdown, replaced) or `exit` (it ended by itself).
fn exit_cause(inst: &Instance, requested: bool) -> &'static str {
    if inst.activity.retired() {
        "idle"
    } else if requested {
        "stop"
    } else {
        "exit"
    }
}

fn slot_status(name: &str, slot: &Slot) -> Option<ModuleStatus> {
    let record = slot.record();
    let failure = record.failure.clone();
    let Some(inst) = slot.current() else {
        let (error, path) = failure?;
        return Some(ModuleStatus {
            name: name.to_string(),
            state: "failed".into(),
            restarts: record.restarts,
            last_exit: record.last_exit.clone(),
            path,
            failure: error,
            ..Default::default()
        });
    };
    let mut status = inst.status();
    status.restarts = record.restarts;
    if status.last_exit.is_empty() {
        status.last_exit = record.last_exit.clone();
    }
    if !inst.is_alive() {
        if let Some((error, _)) = failure {
            status.state = "failed".into();
            if status.failure.is_empty() {
                status.failure = error;
            }
        } else if record.restarting {
            status.state = "restarting".into();
        } else if inst.activity.retired() {
            // Stopped for idle_unload; the next call starts it again.
            status.state = "idle".into();
        }
    }
    Some(status)
}

impl Shared {
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

    fn all_slots(&self) -> Vec<(String, Arc<Slot>)> {
        match self.slots.lock() {
            Ok(s) => s.iter().map(|(n, s)| (n.clone(), s.clone())).collect(),
            Err(_) => vec![],
        }
    }

    fn instances(&self) -> Vec<Arc<Instance>> {
        self.all_slots()
            .iter()
            .filter_map(|(_, s)| s.current())
            .collect()
    }

    fn policy(&self) -> RestartPolicy {
        self.restart.lock().map(|p| *p).unwrap_or_default()
    }

    fn stopping(&self) -> bool {
        self.stopping.load(Ordering::SeqCst)
    }

    /// A dependency: the running instance's origin, or a fresh lookup.
    fn find(&self, name: &str) -> Result<Found, LocateError> {
        if let Some(inst) = self.existing_slot(name).and_then(|s| s.alive()) {
            return Ok(Found {
                located: inst.located.clone(),
                running: true,
            });
        }
        Ok(Found {
            located: locate::locate(name, &self.dirs)?,
            running: false,
        })
    }

    /// Starts `located` after its dependencies. All dependencies are checked
    /// before anything starts; if a start fails, the dependencies this load
    /// started are stopped again. With `expect`, `located` only starts if
    /// its slot still holds that (exited) instance (a restart must not
    /// override an unload or a newer load); otherwise `Aborted`.
    async fn load_located(
        self: &Arc<Self>,
        located: Located,
        cause: Cause,
        expect: Option<&Arc<Instance>>,
    ) -> Result<(Arc<Instance>, bool), Status> {
        if self.stopping() {
            return Err(shutting_down());
        }
        if expect.is_none() {
            if let Some(inst) = self.existing_slot(&located.name).and_then(|s| s.alive()) {
                return Ok((inst, true));
            }
        }
        let name = located.name.clone();
        let mut plan = deps::plan(located, &mut |n| self.find(n)).map_err(dep_status)?;
        let Some(root) = plan.pop() else {
            return Err(Status::internal(format!(
                "module '{name}': empty load plan"
            )));
        };
        let mut started = Vec::new();
        for dep in plan {
            let dep_name = dep.name.clone();
            match self.start_one(dep, Cause::Dependency, None).await {
                Ok((inst, false)) => started.push(inst),
                Ok((_, true)) => {}
                Err(e) => {
                    self.roll_back(started).await;
                    return Err(Status::new(
                        e.code(),
                        format!(
                            "module '{name}' cannot load: its dependency '{dep_name}' failed to start: {}",
                            e.message()
                        ),
                    ));
                }
            }
        }
        match self.start_one(root, cause, expect).await {
            Ok(result) => Ok(result),
            Err(e) => {
                self.roll_back(started).await;
                Err(e)
            }
        }
    }

    /// Starts one module unless it runs (see `load_located` for `expect`).
    async fn start_one(
        self: &Arc<Self>,
        located: Located,
        cause: Cause,
        expect: Option<&Arc<Instance>>,
    ) -> Result<(Arc<Instance>, bool), Status> {
        let slot = self.slot(&located.name);
        let _loading = slot.loading.lock().await;
        if self.stopping() {
            return Err(shutting_down());
        }
        match expect {
            Some(expected) if !slot.holds(expected) => {
                return Err(Status::aborted(format!(
                    "module '{}' was unloaded or loaded again",
                    located.name
                )));
            }
            Some(_) => {}
            None => {
                if let Some(inst) = slot.alive() {
                    return Ok((inst, true));
                }
            }
        }
        let inst = Instance::start(located, &self.spawner, &self.socket, &self.options).await?;
        slot.set(Some(inst.clone()));
        {
            let mut record = slot.record();
            record.failure = None;
            record.restarting = false;
            if cause == Cause::Restart {
                record.restarts += 1;
            } else {
                record.streak = 0;
            }
        }
        self.announce_loaded(&slot, &inst, cause);
        Ok((inst, false))
    }

    /// Watches a freshly started instance for its exit and announces it.
    fn announce_loaded(self: &Arc<Self>, slot: &Arc<Slot>, inst: &Arc<Instance>, cause: Cause) {
        let restarts = slot.record().restarts;
        tokio::spawn(watch(
            Arc::downgrade(self),
            slot.clone(),
            inst.clone(),
            Instant::now(),
        ));
        self.unload_when_idle(slot, inst);
        tracing::info!(module = %inst.name, pid = inst.pid, cause = cause.as_str(), restarts, "module loaded");
        self.events.announce(
            topic::MODULE_LOADED,
            vec![
                ("name", inst.name.as_str().into()),
                ("pid", inst.pid.into()),
                ("path", inst.located.origin.display().to_string().into()),
                ("cause", cause.as_str().into()),
                ("restarts", restarts.into()),
            ],
        );
    }

    /// Watches `inst` for idleness when its manifest (or the server's
    /// default) asks for idle unload.
    fn unload_when_idle(self: &Arc<Self>, slot: &Arc<Slot>, inst: &Arc<Instance>) {
        // An external module's process is not ours to stop.
        if inst.is_external() {
            return;
        }
        let declared = inst.located.manifest.as_ref().and_then(|m| m.idle_unload);
        // Zero is "off", also overriding the server's default.
        let Some(after) = declared
            .or(self.options.idle_unload)
            .filter(|d| !d.is_zero())
        else {
            return;
        };
        let shared = Arc::downgrade(self);
        let (slot, inst) = (slot.clone(), inst.clone());
        let exited = inst.clone();
        tokio::spawn(idle::unload_when_idle(
            inst.activity.clone(),
            after,
            async move {
                exited.wait_exit().await;
            },
            move || async move {
                // After a retire the slot's next lookup starts a new
                // process, which may already have replaced this one:
                // this one is stopped all the same, nobody can call it.
                let Some(shared) = shared.upgrade() else {
                    return;
                };
                let _loading = slot.loading.lock().await;
                if shared.stopping() {
                    return; // `stop_all` stops it.
                }
                tracing::info!(
                    module = %inst.name,
                    pid = inst.pid,
                    "unloading: no calls for {} ms (idle_unload)",
                    after.as_millis()
                );
                inst.stop().await;
            },
        ));
    }

    /// Stops modules a failed load started, last started first.
    async fn roll_back(&self, started: Vec<Arc<Instance>>) {
        for inst in started.into_iter().rev() {
            let slot = self.slot(&inst.name);
            let _loading = slot.loading.lock().await;
            if slot.holds(&inst) {
                slot.set(None);
            }
            tracing::info!(module = %inst.name, "stopping: the load that started it failed");
            inst.stop().await;
        }
    }

    /// Reports how a process ended and applies the restart policy.
    async fn after_exit(
        self: Arc<Self>,
        slot: Arc<Slot>,
        inst: Arc<Instance>,
        status: String,
        lived: Duration,
    ) {
        let requested = inst.stop_requested();
        let failed = !requested
            && if inst.is_external() {
                // A provider has no exit status: it failed only when the
                // server judged so (protocol broken, pings unanswered).
                !inst.status().failure.is_empty()
            } else {
                restart::is_failure(&status)
            };
        slot.record().last_exit = status.clone();
        if !failed {
            self.events.announce(
                topic::MODULE_EXITED,
                vec![
                    ("name", inst.name.as_str().into()),
                    ("pid", inst.pid.into()),
                    ("status", status.as_str().into()),
                    ("requested", requested.into()),
                    ("cause", exit_cause(&inst, requested).into()),
                ],
            );
            return;
        }
        let on_failure = inst
            .located
            .manifest
            .as_ref()
            .is_some_and(|m| m.restart == Restart::OnFailure);
        if !on_failure || self.stopping() || !slot.holds(&inst) {
            self.announce_crash(&inst, &status, &slot, None);
            return;
        }
        self.restart_series(slot, inst, status, lived).await;
    }

    fn announce_crash(
        &self,
        inst: &Instance,
        status: &str,
        slot: &Slot,
        restart_in: Option<Duration>,
    ) {
        let restarts = slot.record().restarts;
        self.events.announce(
            topic::MODULE_CRASHED,
            vec![
                ("name", inst.name.as_str().into()),
                ("pid", inst.pid.into()),
                ("status", status.into()),
                // Why the server gave up on it, when it did (hung, broke the protocol).
                ("reason", inst.status().failure.into()),
                ("restarts", restarts.into()),
                (
                    "restart_in_ms",
                    restart_in.map_or(Value::Nil, |d| (d.as_millis() as u64).into()),
                ),
            ],
        );
    }

    /// Restarts a crashed `on-failure` module with growing delays until a
    /// start succeeds, the module is unloaded or loaded anew, the server
    /// stops, or the series reaches its limit.
    async fn restart_series(
        self: Arc<Self>,
        slot: Arc<Slot>,
        crashed: Arc<Instance>,
        status: String,
        lived: Duration,
    ) {
        let policy = self.policy();
        let name = crashed.name.clone();
        let mut lived = lived;
        let mut last_error = status.clone();
        // The crash is announced once, with the first delay; failed starts
        // after it are announced as `module.failed`.
        let mut announced = false;
        loop {
            let attempt = {
                let mut record = slot.record();
                if lived >= policy.stable_after {
                    record.streak = 0;
                }
                record.streak += 1;
                record.restarting = record.streak <= policy.max_attempts;
                record.streak
            };
            if attempt > policy.max_attempts {
                let error = format!(
                    "gave up after {} restarts in a row; last: {last_error}",
                    policy.max_attempts
                );
                tracing::warn!(module = %name, "{error}");
                if !announced {
                    self.announce_crash(&crashed, &status, &slot, None);
                }
                slot.record().failure =
                    Some((error.clone(), crashed.located.origin.display().to_string()));
                self.events.announce(
                    topic::MODULE_FAILED,
                    vec![("name", name.as_str().into()), ("error", error.into())],
                );
                return;
            }
            let delay = policy.delay(attempt);
            if !announced {
                self.announce_crash(&crashed, &status, &slot, Some(delay));
                announced = true;
            }
            tracing::info!(
                module = %name,
                attempt,
                "restarting in {} ms ({last_error})",
                delay.as_millis()
            );
            tokio::time::sleep(delay).await;
            // Re-read the module from where it came from, so a fixed binary
            // or manifest is picked up.
            let origin = &crashed.located.origin;
            let located = match locate::at_path(&name, origin) {
                Ok(Some(l)) => Ok(l),
                Ok(None) => Err(format!("module '{name}' is gone from {}", origin.display())),
                Err(e) => Err(e.to_string()),
            };
            let result = match located {
                Ok(l) => self
                    .load_located(l, Cause::Restart, Some(&crashed))
                    .await
                    .map_err(|e| (e.code(), e.message().to_string())),
                Err(e) => Err((Code::FailedPrecondition, e)),
            };
            match result {
                Ok(_) => return,
                Err((Code::Aborted, _)) => {
                    slot.record().restarting = false;
                    return;
                }
                Err((_, e)) if self.stopping() => {
                    tracing::debug!(module = %name, "restart abandoned: {e}");
                    return;
                }
                Err((_, e)) => {
                    tracing::warn!(module = %name, "restart failed: {e}");
                    self.events.announce(
                        topic::MODULE_FAILED,
                        vec![("name", name.as_str().into()), ("error", e.as_str().into())],
                    );
                    last_error = e;
                    // A start that failed ran for no time at all.
                    lived = Duration::ZERO;
                }
            }
        }
    }
}

/// Waits for a process to end, then lets the host react. Boxed: a restart
/// starts a new watcher, and the compiler cannot check `Send` for an async
/// fn whose future contains itself.
fn watch(
    shared: Weak<Shared>,
    slot: Arc<Slot>,
    inst: Arc<Instance>,
    started: Instant,
) -> Pin<Box<dyn Future<Output = ()> + Send>> {
    Box::pin(async move {
        let status = inst.wait_exit().await;
        let lived = started.elapsed();
        if let Some(shared) = shared.upgrade() {
            shared.after_exit(slot, inst, status, lived).await;
        }
    })
}

/// The refusal of a provider whose name `running` already has.
fn taken(running: &Instance) -> Status {
    let by = if running.is_external() {
        "another process provides it"
    } else {
        "the server runs it as a module"
    };
    Status::already_exists(format!(
        "module name '{}' is taken: {by} (pid {})",
        running.name, running.pid
    ))
}
