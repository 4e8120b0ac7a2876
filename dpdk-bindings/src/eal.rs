//! EAL initialisation (once per process), lcore queries and cleanup.
//!
//! `rte_eal_init` can run once per process, and `rte_eal_cleanup` frees the hugepage memory
//! that mempools, rings and mbufs live in. [`Eal`] is the guard for both: it is created
//! once, and on drop it cleans up only if every object that lives in EAL memory has been
//! released (a live-object count kept by this crate). Otherwise it leaves the memory to the
//! process exit rather than free memory something still points to.

use std::ffi::{CString, c_char, c_int};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};

use crate::error::{Error, Result};
use crate::ffi;
use crate::ids::{LcoreId, PortId, SocketId};

const NEVER: u8 = 0;
const UP: u8 = 1;
const DOWN: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(NEVER);

/// Objects that live in EAL memory and are not yet released (mempools, ports, rings,
/// memzones, hugepage allocations). Relaxed is enough: the count is only compared on the
/// main thread in `Eal::drop`, after every lcore has been joined.
static LIVE: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn live_inc() {
    LIVE.fetch_add(1, Ordering::Relaxed);
}

pub(crate) fn live_dec() {
    LIVE.fetch_sub(1, Ordering::Relaxed);
}

/// Builds the EAL argument list. Every option is passed to `rte_eal_init` as is, in order.
#[derive(Debug, Clone)]
pub struct EalBuilder {
    args: Vec<String>,
}

impl EalBuilder {
    /// Starts an argument list; `program` becomes argv\[0\] (DPDK names its logs after it).
    pub fn new(program: &str) -> Self {
        EalBuilder {
            args: vec![program.to_owned()],
        }
    }

    /// Adds one raw EAL argument (for passthrough of `-l`, `-a`, `--vdev` ...).
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    /// Adds raw EAL arguments.
    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    /// `--no-huge -m MB`: ordinary memory instead of hugepages (tests, machines without them).
    pub fn no_huge(self, mem_mb: u32) -> Self {
        self.arg("--no-huge").arg("-m").arg(mem_mb.to_string())
    }

    /// `--no-pci`: do not probe PCI devices.
    pub fn no_pci(self) -> Self {
        self.arg("--no-pci")
    }

    /// `--vdev SPEC`, e.g. `net_ring0` or `net_pcap0,rx_pcap=in.pcap`.
    pub fn vdev(self, spec: impl Into<String>) -> Self {
        self.arg("--vdev").arg(spec)
    }

    /// `-l LIST`: the lcores to run on, e.g. `0-1`.
    pub fn lcores(self, list: impl Into<String>) -> Self {
        self.arg("-l").arg(list)
    }

    /// `--file-prefix P`: keeps runtime files of parallel processes apart.
    pub fn file_prefix(self, prefix: impl Into<String>) -> Self {
        self.arg("--file-prefix").arg(prefix)
    }

    /// `--huge-unlink`: hugepage files are unlinked after mapping (nothing left behind).
    pub fn huge_unlink(self) -> Self {
        self.arg("--huge-unlink")
    }

    /// `--log-level SPEC`.
    pub fn log_level(self, spec: impl Into<String>) -> Self {
        self.arg("--log-level").arg(spec)
    }

    /// The arguments as they will be passed.
    pub fn as_args(&self) -> &[String] {
        &self.args
    }

    /// Runs `rte_eal_init`. Fails if the EAL was initialised before in this process.
    pub fn init(self) -> Result<Eal> {
        if STATE
            .compare_exchange(NEVER, UP, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(Error::AlreadyInitialised);
        }
        let cargs = self
            .args
            .iter()
            .map(|a| {
                CString::new(a.as_str()).map_err(|_| {
                    Error::invalid("rte_eal_init", format!("argument {a:?} contains NUL"))
                })
            })
            .collect::<Result<Vec<_>>>();
        let cargs = match cargs {
            Ok(c) => c,
            Err(e) => {
                STATE.store(NEVER, Ordering::Release);
                return Err(e);
            }
        };
        // EAL may keep pointers into argv (it permutes it and stores some strings), so the
        // strings are leaked on purpose: a few bytes, once per process.
        let mut argv: Vec<*mut c_char> = cargs.into_iter().map(CString::into_raw).collect();
        let argc = c_int::try_from(argv.len())
            .map_err(|_| Error::invalid("rte_eal_init", "too many arguments"))?;
        argv.push(std::ptr::null_mut());
        let argv = argv.leak();
        // The CPUs the process may use, before EAL pins this thread to the main lcore.
        let _ = ALLOWED_CPUS.set(crate::current_thread_cpus());
        // SAFETY: argv holds argc valid NUL-terminated strings followed by NULL and is never
        // freed; STATE guarantees this is the only call in the process.
        let ret = unsafe { ffi::rte_eal_init(argc, argv.as_mut_ptr()) };
        if ret < 0 {
            // EAL refuses a second init even after a failed one, so the state stays UP-ish:
            // mark it DOWN so later calls get AlreadyInitialised rather than undefined behaviour.
            STATE.store(DOWN, Ordering::Release);
            return Err(Error::last(format!(
                "rte_eal_init({})",
                self.args.join(" ")
            )));
        }
        Ok(Eal {
            _not_send: PhantomData,
            kept: std::sync::Mutex::new(Vec::new()),
        })
    }
}

static ALLOWED_CPUS: std::sync::OnceLock<Vec<usize>> = std::sync::OnceLock::new();

/// Something kept as long as the EAL ([`Eal::keep_alive`]).
pub(crate) trait Kept: Send + Sync + std::fmt::Debug {}

impl<T: Send + Sync + std::fmt::Debug> Kept for T {}

/// The initialised EAL. Not `Send`: DPDK wants cleanup on the main lcore.
#[derive(Debug)]
pub struct Eal {
    _not_send: PhantomData<*const ()>,
    /// What ports point into (the rings of ring-backed ports): it lives as long as the
    /// EAL ([`Eal::keep_alive`]).
    kept: std::sync::Mutex<Vec<std::sync::Arc<dyn Kept>>>,
}

impl Eal {
    /// Number of lcores the EAL runs (main + workers).
    pub fn lcore_count(&self) -> u32 {
        // SAFETY: EAL is initialised (an Eal exists); read-only query.
        unsafe { ffi::rte_lcore_count() }
    }

    /// The main lcore (the thread that called init).
    pub fn main_lcore(&self) -> LcoreId {
        // SAFETY: EAL is initialised; read-only query.
        LcoreId(unsafe { ffi::rte_get_main_lcore() })
    }

    /// The worker lcores, in order.
    pub fn worker_lcores(&self) -> Vec<LcoreId> {
        let mut out = Vec::new();
        // SAFETY: EAL is initialised; rte_get_next_lcore walks the lcore config read-only.
        // Arguments: start before the first (-1 as unsigned), skip main, no wrap.
        let mut id = unsafe { ffi::rte_get_next_lcore(u32::MAX, 1, 0) };
        while id < ffi::RTE_MAX_LCORE {
            out.push(LcoreId(id));
            // SAFETY: as above.
            id = unsafe { ffi::rte_get_next_lcore(id, 1, 0) };
        }
        out
    }

    /// The CPUs left for control threads: those the process was allowed before EAL
    /// started, minus the CPUs of every lcore (the polling threads). Empty when the lcores
    /// take them all.
    pub fn control_cpus(&self) -> Vec<usize> {
        let mut lcores = self.worker_lcores();
        lcores.push(self.main_lcore());
        let busy: Vec<usize> = lcores
            .iter()
            // SAFETY: EAL is initialised; a read-only lookup in the lcore config.
            .map(|l| unsafe { ffi::rte_lcore_to_cpu_id(l.0 as _) } as usize)
            .collect();
        ALLOWED_CPUS
            .get()
            .map(|all| all.iter().copied().filter(|c| !busy.contains(c)).collect())
            .unwrap_or_default()
    }

    /// The NUMA socket of the calling lcore.
    pub fn socket_id(&self) -> SocketId {
        // SAFETY: EAL is initialised; reads the per-thread socket id.
        SocketId(unsafe { ffi::rte_socket_id() } as i32)
    }

    /// TSC ticks per second, for turning `rdtsc` deltas into time.
    pub fn tsc_hz(&self) -> u64 {
        // SAFETY: EAL is initialised (it calibrates the TSC during init).
        unsafe { ffi::rte_get_tsc_hz() }
    }

    /// Whether EAL runs on hugepages (false with `--no-huge`).
    pub fn has_hugepages(&self) -> bool {
        // SAFETY: EAL is initialised; read-only query.
        unsafe { ffi::rte_eal_has_hugepages() != 0 }
    }

    /// The ethdev ports that are available (probed and not owned by another component).
    pub fn ports(&self) -> Vec<PortId> {
        (0..ffi::RTE_MAX_ETHPORTS as u16)
            // SAFETY: EAL is initialised; rte_eth_dev_is_valid_port checks any id.
            .filter(|&p| unsafe { ffi::rte_eth_dev_is_valid_port(p) } != 0)
            .map(PortId)
            .collect()
    }

    /// Looks a port up by its device name (e.g. `net_ring0`).
    pub fn port_by_name(&self, name: &str) -> Result<PortId> {
        let c = CString::new(name)
            .map_err(|_| Error::invalid("rte_eth_dev_get_port_by_name", "name contains NUL"))?;
        let mut id = 0u16;
        // SAFETY: c is a valid C string; id is a valid out-pointer.
        let ret = unsafe { ffi::rte_eth_dev_get_port_by_name(c.as_ptr(), &mut id) };
        crate::error::check(|| format!("rte_eth_dev_get_port_by_name({name})"), ret)?;
        Ok(PortId(id))
    }

    /// Plugs a virtual device in while running (`net_tap1,iface=tap1`, `net_null2`) and
    /// returns its port. The name is the part before the first comma.
    pub fn hotplug_vdev(&self, devargs: &str) -> Result<PortId> {
        let (name, args) = devargs.split_once(',').unwrap_or((devargs, ""));
        let op = || format!("rte_eal_hotplug_add(vdev, {devargs})");
        let bus = CString::new("vdev").map_err(|_| Error::invalid(op(), "bus name"))?;
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        let cargs =
            CString::new(args).map_err(|_| Error::invalid(op(), "arguments contain NUL"))?;
        // SAFETY: three valid C strings; EAL is initialised; hotplug is called from the
        // thread that owns the Eal (the main lcore), as DPDK requires.
        let ret = unsafe { ffi::rte_eal_hotplug_add(bus.as_ptr(), cname.as_ptr(), cargs.as_ptr()) };
        crate::error::check(op, ret)?;
        self.port_by_name(name)
    }

    /// Removes a virtual device plugged in with [`Eal::hotplug_vdev`]. Its port must be
    /// closed first (drop the `Port` and every queue handle).
    pub fn unplug_vdev(&self, name: &str) -> Result<()> {
        let op = || format!("rte_eal_hotplug_remove(vdev, {name})");
        let bus = CString::new("vdev").map_err(|_| Error::invalid(op(), "bus name"))?;
        let cname = CString::new(name).map_err(|_| Error::invalid(op(), "name contains NUL"))?;
        // SAFETY: valid C strings; EAL is initialised; called from the Eal's thread.
        let ret = unsafe { ffi::rte_eal_hotplug_remove(bus.as_ptr(), cname.as_ptr()) };
        crate::error::check(op, ret).map(|_| ())
    }

    /// Runs `f` on worker lcore `lcore`; join the handle to get its result.
    pub fn launch<F, T>(&self, lcore: LcoreId, f: F) -> Result<crate::lcore::LcoreJoin<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        crate::lcore::launch(lcore, f)
    }
}

impl Eal {
    /// Keeps `o` alive as long as the EAL: memory a port points into (the rings of a
    /// ring-backed port), which DPDK never lets go before the EAL closes its ports.
    pub(crate) fn keep_alive(&self, o: std::sync::Arc<dyn Kept>) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).push(o);
    }
}

impl Drop for Eal {
    fn drop(&mut self) {
        // SAFETY: EAL is initialised; waits for every worker lcore to finish its job, so no
        // closure launched by us is still running when memory is released below.
        unsafe { ffi::rte_eal_mp_wait_lcore() };
        STATE.store(DOWN, Ordering::Release);
        let kept = std::mem::take(&mut *self.kept.lock().unwrap_or_else(|e| e.into_inner()));
        if !kept.is_empty() {
            // Ports still point into these until the EAL closes them: leave both to the
            // process exit.
            std::mem::forget(kept);
            return;
        }
        if LIVE.load(Ordering::Relaxed) != 0 {
            // Something still points into EAL memory: leave it to the process exit.
            return;
        }
        // SAFETY: EAL is initialised, called once (Eal is unique), on the thread that
        // created it (Eal is not Send), with no object of ours left in EAL memory.
        unsafe { ffi::rte_eal_cleanup() };
    }
}
