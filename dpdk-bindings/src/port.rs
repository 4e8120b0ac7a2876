//! Ethernet ports: configuration, queues, start/stop, statistics, MAC and link.
//!
//! Configuration is done once, on the control thread ([`Port::configure`]). The fast path
//! gets one [`RxQueue`] / [`TxQueue`] handle per queue ([`Port::take_queues`]), each owned
//! by the lcore that polls it, as in DPDK's l3fwd: a queue is never polled by two threads.
//!
//! Lifetimes the types keep: the port holds its receive pool (`Arc<Mempool>`), so the
//! pool outlives every descriptor that points into it whatever the caller drops; queue
//! handles exist only while the port is started, and [`Port::stop`] is refused while any
//! is out, so no queue is ever polled on a stopped port. Polling needs `&mut` on a handle
//! that is not `Clone`; a stop needs every handle back (dropped), so the two cannot
//! overlap.

use std::ffi::CStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use crate::burst::Burst;
use crate::eal::{Eal, live_dec, live_inc};
use crate::error::{Error, Result, check};
use crate::ffi;
use crate::ids::{PortId, QueueId};
use crate::mempool::Mempool;

/// Linux's ENOTSUP (= EOPNOTSUPP), which DPDK returns for features a driver lacks.
const ENOTSUP: i32 = 95;

/// How to configure a port.
#[derive(Debug, Clone)]
pub struct PortConfig {
    /// RX queues (one per forwarding lcore that reads this port).
    pub rx_queues: u16,
    /// TX queues (one per lcore that sends on this port).
    pub tx_queues: u16,
    /// RX descriptors per queue (adjusted to what the driver allows).
    pub rx_desc: u16,
    /// TX descriptors per queue (adjusted to what the driver allows).
    pub tx_desc: u16,
    /// Spread flows over RX queues with RSS (IP/TCP/UDP, as far as the device supports).
    pub rss: bool,
    /// Receive every frame whatever its destination MAC.
    pub promiscuous: bool,
    /// The largest IP packet the port carries (Ethernet payload, no L2 header): 1500
    /// unless a jumbo fabric asks for more. Refused at configuration when the driver's
    /// limit is lower, so a jumbo frame is never dropped silently later.
    pub mtu: u16,
}

impl Default for PortConfig {
    fn default() -> Self {
        PortConfig {
            rx_queues: 1,
            tx_queues: 1,
            rx_desc: 1024,
            tx_desc: 1024,
            rss: true,
            promiscuous: true,
            mtu: 1500,
        }
    }
}

/// What the driver says about a port.
#[derive(Debug, Clone)]
pub struct PortInfo {
    /// Device name, e.g. `net_ring0`.
    pub name: String,
    /// Driver name, e.g. `net_ring`.
    pub driver: String,
    /// Most RX queues the device offers.
    pub max_rx_queues: u16,
    /// Most TX queues the device offers.
    pub max_tx_queues: u16,
    /// RSS hash types the device supports (RTE_ETH_RSS_* bits).
    pub rss_offloads: u64,
    /// NUMA socket of the device (-1 when unknown).
    pub socket: i32,
    /// The largest MTU the driver accepts.
    pub max_mtu: u16,
}

/// Link state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Link {
    /// Link is up.
    pub up: bool,
    /// Speed in Mbit/s (0 when unknown).
    pub speed_mbps: u32,
    /// Full duplex.
    pub full_duplex: bool,
}

/// Basic port counters (`rte_eth_stats`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortStats {
    /// Packets received.
    pub ipackets: u64,
    /// Packets sent.
    pub opackets: u64,
    /// Bytes received.
    pub ibytes: u64,
    /// Bytes sent.
    pub obytes: u64,
    /// RX packets dropped by the device (queue full).
    pub imissed: u64,
    /// RX errors.
    pub ierrors: u64,
    /// TX errors.
    pub oerrors: u64,
    /// RX mbuf allocation failures.
    pub rx_nombuf: u64,
}

#[derive(Debug)]
struct PortInner {
    id: PortId,
    started: AtomicBool,
    /// The pool the RX queues fill from: freed only after the port is closed (fields
    /// drop after `Drop::drop`).
    _pool: Arc<Mempool>,
}

impl PortInner {
    fn stop(&self) -> Result<()> {
        if self.started.swap(false, Ordering::AcqRel) {
            // SAFETY: the port is configured and started; stopping is a control operation.
            let ret = unsafe { ffi::rte_eth_dev_stop(self.id.0) };
            check(|| format!("rte_eth_dev_stop({})", self.id), ret)?;
        }
        Ok(())
    }
}

impl Drop for PortInner {
    fn drop(&mut self) {
        // Errors cannot be reported from drop; the port is closed regardless.
        let _ = self.stop();
        // SAFETY: last handle to the configured port: no queue handle can poll it any more.
        unsafe { ffi::rte_eth_dev_close(self.id.0) };
        live_dec();
    }
}

/// A configured port. Closed when it and every queue handle are dropped.
#[derive(Debug)]
pub struct Port {
    inner: Arc<PortInner>,
    rx_queues: u16,
    tx_queues: u16,
}

/// The largest MTU `info` allows, as ethdev checks it: the driver's `max_mtu` and its
/// largest frame less the L2 overhead (the driver's own, or Ethernet header + CRC).
fn max_mtu(info: &ffi::rte_eth_dev_info) -> u16 {
    let overhead = if info.max_mtu != u16::MAX && info.max_rx_pktlen > u32::from(info.max_mtu) {
        info.max_rx_pktlen - u32::from(info.max_mtu)
    } else {
        18
    };
    let by_frame = info.max_rx_pktlen.saturating_sub(overhead);
    u16::try_from(by_frame)
        .unwrap_or(u16::MAX)
        .min(info.max_mtu)
}

fn dev_info(id: PortId) -> Result<ffi::rte_eth_dev_info> {
    let mut info = ffi::rte_eth_dev_info::default();
    // SAFETY: info is a valid out-struct; any port id is checked by DPDK.
    let ret = unsafe { ffi::rte_eth_dev_info_get(id.0, &mut info) };
    check(|| format!("rte_eth_dev_info_get({id})"), ret)?;
    Ok(info)
}

/// Reads what the driver says about `id` (works before configuration).
pub fn port_info(_eal: &Eal, id: PortId) -> Result<PortInfo> {
    let info = dev_info(id)?;
    let driver = if info.driver_name.is_null() {
        String::new()
    } else {
        // SAFETY: driver_name is a NUL-terminated static string owned by the driver.
        unsafe { CStr::from_ptr(info.driver_name) }
            .to_string_lossy()
            .into_owned()
    };
    // SAFETY: any port id is accepted and checked.
    let socket = unsafe { ffi::rte_eth_dev_socket_id(id.0) };
    let mut buf = [0 as std::ffi::c_char; 64];
    // SAFETY: buf has RTE_ETH_NAME_MAX_LEN (64) bytes, as the function requires.
    let ret = unsafe { ffi::rte_eth_dev_get_name_by_port(id.0, buf.as_mut_ptr()) };
    check(|| format!("rte_eth_dev_get_name_by_port({id})"), ret)?;
    // SAFETY: on success DPDK wrote a NUL-terminated name into buf.
    let name = unsafe { CStr::from_ptr(buf.as_ptr()) }
        .to_string_lossy()
        .into_owned();
    Ok(PortInfo {
        name,
        driver,
        max_rx_queues: info.max_rx_queues,
        max_tx_queues: info.max_tx_queues,
        rss_offloads: info.flow_type_rss_offloads,
        socket,
        max_mtu: max_mtu(&info),
    })
}

impl Port {
    /// Configures `id` with `cfg`, receiving into `pool` (which the port keeps alive),
    /// and starts it.
    pub fn configure(eal: &Eal, id: PortId, cfg: &PortConfig, pool: &Arc<Mempool>) -> Result<Port> {
        let info = dev_info(id)?;
        if cfg.rx_queues == 0 || cfg.rx_queues > info.max_rx_queues {
            return Err(Error::invalid(
                format!("configure {id}"),
                format!(
                    "rx_queues {} not in 1..={}",
                    cfg.rx_queues, info.max_rx_queues
                ),
            ));
        }
        if cfg.tx_queues == 0 || cfg.tx_queues > info.max_tx_queues {
            return Err(Error::invalid(
                format!("configure {id}"),
                format!(
                    "tx_queues {} not in 1..={}",
                    cfg.tx_queues, info.max_tx_queues
                ),
            ));
        }
        let largest = max_mtu(&info);
        if cfg.mtu < 68 || cfg.mtu > largest {
            return Err(Error::invalid(
                format!("configure {id}"),
                format!(
                    "mtu {} not in 68..={} (the driver's largest)",
                    cfg.mtu, largest
                ),
            ));
        }
        let mut conf = ffi::rte_eth_conf::default();
        conf.rxmode.mtu = u32::from(cfg.mtu);
        if cfg.rss && cfg.rx_queues > 1 {
            // SAFETY: plain constant getter.
            let wanted = unsafe { ffi::shim_rss_hf_ip_tcp_udp() };
            let hf = wanted & info.flow_type_rss_offloads;
            if hf != 0 {
                conf.rxmode.mq_mode = ffi::RTE_ETH_MQ_RX_RSS;
                conf.rx_adv_conf.rss_conf.rss_hf = hf;
            }
        }
        // SAFETY: conf is a fully initialised rte_eth_conf; the port is not started.
        let ret = unsafe { ffi::rte_eth_dev_configure(id.0, cfg.rx_queues, cfg.tx_queues, &conf) };
        check(|| format!("rte_eth_dev_configure({id})"), ret)?;
        live_inc();
        // From here on the port is closed by PortInner::drop on any error.
        let inner = Arc::new(PortInner {
            id,
            started: AtomicBool::new(false),
            _pool: Arc::clone(pool),
        });

        let (mut nb_rx, mut nb_tx) = (cfg.rx_desc, cfg.tx_desc);
        // SAFETY: valid out-pointers; the port is configured.
        let ret = unsafe { ffi::rte_eth_dev_adjust_nb_rx_tx_desc(id.0, &mut nb_rx, &mut nb_tx) };
        check(|| format!("rte_eth_dev_adjust_nb_rx_tx_desc({id})"), ret)?;
        // SAFETY: any port id is accepted; a negative socket means "any".
        let socket = unsafe { ffi::rte_eth_dev_socket_id(id.0) };
        let socket = if socket < 0 {
            ffi::SOCKET_ID_ANY
        } else {
            socket
        };
        for q in 0..cfg.rx_queues {
            // SAFETY: configured, not started port; q < rx_queues; pool is a live pktmbuf
            // pool that outlives the port (PortInner holds an Arc of it until after the
            // port is closed).
            let ret = unsafe {
                ffi::rte_eth_rx_queue_setup(
                    id.0,
                    q,
                    nb_rx,
                    socket as u32,
                    std::ptr::null(),
                    pool.as_ptr(),
                )
            };
            check(|| format!("rte_eth_rx_queue_setup({id}, queue {q})"), ret)?;
        }
        for q in 0..cfg.tx_queues {
            // SAFETY: configured, not started port; q < tx_queues; default tx config.
            let ret = unsafe {
                ffi::rte_eth_tx_queue_setup(id.0, q, nb_tx, socket as u32, std::ptr::null())
            };
            check(|| format!("rte_eth_tx_queue_setup({id}, queue {q})"), ret)?;
        }
        if cfg.promiscuous {
            // SAFETY: configured port. Drivers without the feature return -ENOTSUP, which
            // we accept: virtual devices receive everything anyway.
            let ret = unsafe { ffi::rte_eth_promiscuous_enable(id.0) };
            if ret < 0 && ret != -ENOTSUP {
                check(|| format!("rte_eth_promiscuous_enable({id})"), ret)?;
            }
        }
        let port = Port {
            inner,
            rx_queues: cfg.rx_queues,
            tx_queues: cfg.tx_queues,
        };
        let _ = eal;
        port.start()?;
        Ok(port)
    }

    /// The port id.
    pub fn id(&self) -> PortId {
        self.inner.id
    }

    /// Starts the port (idempotent).
    pub fn start(&self) -> Result<()> {
        if !self.inner.started.swap(true, Ordering::AcqRel) {
            // SAFETY: configured port with every queue set up.
            let ret = unsafe { ffi::rte_eth_dev_start(self.inner.id.0) };
            if let Err(e) = check(|| format!("rte_eth_dev_start({})", self.inner.id), ret) {
                self.inner.started.store(false, Ordering::Release);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Queue handles out (each holds the port).
    fn queues_out(&self) -> usize {
        Arc::strong_count(&self.inner) - 1
    }

    /// Stops the port (idempotent), once every queue handle is back (dropped): a queue
    /// polled while its port stops would race the driver's teardown, so that is refused.
    pub fn stop(&mut self) -> Result<()> {
        let out = self.queues_out();
        if out > 0 {
            return Err(Error::invalid(
                format!("stop {}", self.inner.id),
                format!("{out} queue handles are still out: drop them first"),
            ));
        }
        self.inner.stop()
    }

    /// Whether the port is started.
    pub fn is_started(&self) -> bool {
        self.inner.started.load(Ordering::Acquire)
    }

    /// The queue handles, one per RX and TX queue, to be moved to the lcores: only while
    /// the port is started and no handle is out (so each queue has one poller).
    pub fn take_queues(&mut self) -> Option<(Vec<RxQueue>, Vec<TxQueue>)> {
        if self.queues_out() > 0 || !self.is_started() {
            return None;
        }
        let rx = (0..self.rx_queues)
            .map(|q| RxQueue {
                port: Arc::clone(&self.inner),
                queue: QueueId(q),
            })
            .collect();
        let tx = (0..self.tx_queues)
            .map(|q| TxQueue {
                port: Arc::clone(&self.inner),
                queue: QueueId(q),
            })
            .collect();
        Some((rx, tx))
    }

    /// The port's MAC address.
    pub fn mac(&self) -> Result<[u8; 6]> {
        let mut addr = ffi::rte_ether_addr::default();
        // SAFETY: valid out-struct for a configured port.
        let ret = unsafe { ffi::rte_eth_macaddr_get(self.inner.id.0, &mut addr) };
        check(|| format!("rte_eth_macaddr_get({})", self.inner.id), ret)?;
        Ok(addr.addr_bytes)
    }

    /// Link state, without waiting.
    pub fn link(&self) -> Result<Link> {
        let mut link = ffi::rte_eth_link::default();
        // SAFETY: valid out-struct for a configured port.
        let ret = unsafe { ffi::rte_eth_link_get_nowait(self.inner.id.0, &mut link) };
        check(
            || format!("rte_eth_link_get_nowait({})", self.inner.id),
            ret,
        )?;
        Ok(Link {
            up: link.link_status() != 0,
            speed_mbps: link.link_speed,
            full_duplex: link.link_duplex() != 0,
        })
    }

    /// The MTU the port runs with.
    pub fn mtu(&self) -> Result<u16> {
        let mut mtu = 0u16;
        // SAFETY: valid out-pointer; the port is configured.
        let ret = unsafe { ffi::rte_eth_dev_get_mtu(self.inner.id.0, &mut mtu) };
        check(|| format!("rte_eth_dev_get_mtu({})", self.inner.id), ret)?;
        Ok(mtu)
    }

    /// Port counters.
    pub fn stats(&self) -> Result<PortStats> {
        let mut s = ffi::rte_eth_stats::default();
        // SAFETY: valid out-struct for a configured port.
        let ret = unsafe { ffi::rte_eth_stats_get(self.inner.id.0, &mut s) };
        check(|| format!("rte_eth_stats_get({})", self.inner.id), ret)?;
        Ok(PortStats {
            ipackets: s.ipackets,
            opackets: s.opackets,
            ibytes: s.ibytes,
            obytes: s.obytes,
            imissed: s.imissed,
            ierrors: s.ierrors,
            oerrors: s.oerrors,
            rx_nombuf: s.rx_nombuf,
        })
    }

    /// Resets the port counters.
    pub fn reset_stats(&self) -> Result<()> {
        // SAFETY: configured port.
        let ret = unsafe { ffi::rte_eth_stats_reset(self.inner.id.0) };
        check(|| format!("rte_eth_stats_reset({})", self.inner.id), ret).map(|_| ())
    }
}

/// One RX queue, polled by one lcore.
#[derive(Debug)]
pub struct RxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

impl RxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue.
    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Receives into the free slots of `burst`; returns how many arrived.
    #[inline]
    pub fn rx_burst(&mut self, burst: &mut Burst) -> usize {
        self.rx_burst_max(burst, usize::MAX)
    }

    /// Receives at most `max` packets into the free slots of `burst` (the burst size of
    /// a forwarding loop); returns how many arrived.
    #[inline]
    pub fn rx_burst_max(&mut self, burst: &mut Burst, max: usize) -> usize {
        let spare = burst.spare().min(max) as u16;
        if spare == 0 {
            return 0;
        }
        let ptr = burst.spare_ptr();
        // SAFETY: this handle is the only poller of (port, queue) (it is not Clone and
        // rx_burst takes &mut self); ptr has `spare` writable slots; DPDK writes n owned
        // mbuf pointers there and commit takes ownership of exactly those.
        let n = unsafe { ffi::shim_rx_burst(self.port.id.0, self.queue.0, ptr, spare) };
        // SAFETY: see above; n <= spare.
        unsafe { burst.commit(usize::from(n)) };
        usize::from(n)
    }
}

/// One TX queue, used by one lcore.
#[derive(Debug)]
pub struct TxQueue {
    port: Arc<PortInner>,
    queue: QueueId,
}

impl TxQueue {
    /// The port.
    pub fn port(&self) -> PortId {
        self.port.id
    }

    /// The queue.
    pub fn queue(&self) -> QueueId {
        self.queue
    }

    /// Sends from the front of `burst`; the mbufs the device did not take stay in it
    /// (the caller retries or drops them). Returns how many were sent.
    #[inline]
    pub fn tx_burst(&mut self, burst: &mut Burst) -> usize {
        let len = burst.len() as u16;
        if len == 0 {
            return 0;
        }
        let ptr = burst.held_ptr();
        // SAFETY: single user of (port, queue) as for RxQueue; ptr holds len owned mbufs;
        // DPDK takes ownership of the first n it returns.
        let n = unsafe { ffi::shim_tx_burst(self.port.id.0, self.queue.0, ptr, len) };
        // SAFETY: the first n mbufs now belong to the device.
        unsafe { burst.consumed(usize::from(n)) };
        usize::from(n)
    }
}
