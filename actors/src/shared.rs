//! What every actor and task of one server shares: the protocol, the transport, the settings,
//! the observers, the connection slots and the shutdown tokens. Restarted actors get it as
//! `Arguments`; nothing in it belongs to a restartable actor.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;

use crate::budget::Budget;
use crate::config::ServerConfig;
use crate::control::Control;
use crate::log_limit::LogLimit;
use crate::observers::Observers;
use crate::peers::Peers;
use crate::protocol::Protocol;
use crate::slots::Slots;
use crate::transport::Transport;

pub(crate) struct Shared<P: Protocol, T: Transport> {
    pub(crate) protocol: P,
    pub(crate) transport: T,
    pub(crate) config: ServerConfig,
    pub(crate) observers: Observers<P>,
    pub(crate) local_addr: SocketAddr,
    pub(crate) slots: Slots,
    /// The server-wide handler limit (`max_concurrent_handlers`), if any.
    pub(crate) handler_permits: Option<Arc<Semaphore>>,
    /// The server-wide memory budget (`max_buffered_bytes`), if any.
    pub(crate) budget: Option<Budget>,
    /// The per-peer counts and rates (`max_connections_per_peer`, `accept_rate_per_peer`).
    pub(crate) peers: Arc<Peers>,
    /// The rate of the connection log lines (`connection_log_rate`).
    pub(crate) connection_logs: Arc<LogLimit>,
    pub(crate) control: Arc<Control>,
    /// Every task the tree spawns (accept loops, connection I/O, handlers, restart timers), so
    /// that shutdown can wait for all of them.
    pub(crate) tasks: TaskTracker,
}
