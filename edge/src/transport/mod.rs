//! The seam between smtp-edge and the ring: accept, connect, recv, send, file read and write,
//! fsync, rename.
//!
//! Everything above this module (driver, spool) speaks these few types; only this module names
//! tokio-uring. Buffers are owned and travel into the kernel and back, as io_uring requires: every
//! call returns its buffer whether it succeeded or not.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::Path;

use std::cell::OnceCell;
use std::os::fd::{AsRawFd, RawFd};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;
use tokio_uring::buf::fixed::{FixedBuf, FixedBufPool};
use tokio_uring::buf::{BoundedBuf, IoBuf};

/// Runs `future` to completion on a new io_uring runtime owning this thread, its ring sized
/// for `entries` submissions; tasks it spawns ([`spawn`]) stay on this thread.
pub fn run<F: Future>(entries: u32, future: F) -> F::Output {
    tokio_uring::builder().entries(entries).start(future)
}

#[cfg(test)]
mod tests;

/// Spawns a task on this thread's ring (within [`run`]).
pub fn spawn<F>(task: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    tokio_uring::spawn(task)
}

/// Backlog of each listening socket; high because an MX sees connection bursts.
const LISTEN_BACKLOG: i32 = 4096;

/// Fails with `AddrInUse` if a socket, of this process or another, already listens on `addr`.
///
/// `SO_REUSEPORT` lets any process of the same user join a listening group: a second server
/// started on the same address by mistake would bind without error and silently take part of
/// the connections. A socket without `SO_REUSEPORT` cannot join: its bind fails while anything
/// listens there (`SO_REUSEADDR` keeps a previous run's `TIME_WAIT` connections from counting).
/// The probe is dropped at once; a port of the kernel's choice (0) is never in use.
pub fn ensure_unused(addr: SocketAddr) -> io::Result<()> {
    use socket2::{Domain, Protocol, Socket, Type};
    if addr.port() == 0 {
        return Ok(());
    }
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.bind(&addr.into())
}

/// Binds a TCP listener with `SO_REUSEPORT`, so that each worker can own one socket for the same
/// address and the kernel spreads connections across them.
pub fn bind_reuseport(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(LISTEN_BACKLOG)?;
    Ok(socket.into())
}

/// A listening socket on this worker's ring.
pub struct Listener(tokio_uring::net::TcpListener);

impl Listener {
    /// Moves a bound std listener onto the current worker's ring.
    pub fn from_std(listener: std::net::TcpListener) -> Self {
        Listener(tokio_uring::net::TcpListener::from_std(listener))
    }

    /// Waits for the next connection.
    pub async fn accept(&self) -> io::Result<(Stream, SocketAddr)> {
        let (stream, peer) = self.0.accept().await?;
        // Replies are small and the client waits for them: do not let Nagle hold them back.
        let _ = stream.set_nodelay(true);
        Ok((Stream::new(Socket::Tcp(stream)), peer))
    }
}

/// A connected stream on this thread's ring: TCP (accepted, or connected by the relay) or a
/// Unix socket (the relay's LMTP to a local mail store).
pub struct Stream {
    /// The socket's registration with the runtime's readiness reactor (epoll), made at the
    /// first [`Stream::recv_when_ready`]; `None` inside if registration failed. Declared
    /// before `socket` so that it is dropped (deregistered) while the descriptor is still
    /// open: a closed number may already belong to another connection.
    ready: OnceCell<Option<AsyncFd<Descriptor>>>,
    socket: Socket,
}

/// A descriptor owned by the stream's socket, lent to the readiness reactor; never closed here.
struct Descriptor(RawFd);

impl AsRawFd for Descriptor {
    fn as_raw_fd(&self) -> RawFd {
        self.0
    }
}

enum Socket {
    Tcp(tokio_uring::net::TcpStream),
    Unix(tokio_uring::net::UnixStream),
}

/// A receive buffer: a registered (fixed) buffer from the worker's pool when one is free, else a
/// heap buffer, so a burst of connections never waits for the pool.
pub struct RecvBuf {
    mem: RecvMem,
    /// Bytes received by the last read, from the start of the buffer.
    len: usize,
}

enum RecvMem {
    /// Registered with the ring: the kernel skips the per-call page pinning.
    Fixed(FixedBuf),
    /// Ordinary heap memory.
    Heap(Vec<u8>),
}

impl RecvBuf {
    /// The bytes received by the last [`Stream::recv`].
    pub fn filled(&self) -> &[u8] {
        let all: &[u8] = match &self.mem {
            RecvMem::Fixed(b) => b,
            RecvMem::Heap(v) => v,
        };
        &all[..self.len.min(all.len())]
    }

    /// Whether this buffer is registered with the ring.
    pub fn is_fixed(&self) -> bool {
        matches!(self.mem, RecvMem::Fixed(_))
    }

    /// How many bytes one read may bring.
    fn capacity(&self) -> usize {
        match &self.mem {
            RecvMem::Fixed(b) => IoBuf::bytes_total(b),
            RecvMem::Heap(v) => v.capacity(),
        }
    }
}

/// A worker's pool of registered receive buffers.
pub struct BufferPool {
    pool: Option<FixedBufPool<Vec<u8>>>,
    size: usize,
    heap_size: usize,
}

impl BufferPool {
    /// Allocates `count` buffers of `size` bytes and registers them with the current ring; when
    /// they are all taken, [`BufferPool::take`] hands out heap buffers of `heap_size` bytes.
    pub fn register(count: usize, size: usize, heap_size: usize) -> io::Result<Self> {
        let pool = FixedBufPool::new((0..count).map(|_| Vec::with_capacity(size)));
        pool.register()?;
        Ok(BufferPool {
            pool: Some(pool),
            size,
            heap_size,
        })
    }

    /// A pool that hands out heap buffers only, for when registration is refused.
    pub fn unregistered(size: usize) -> Self {
        BufferPool {
            pool: None,
            size,
            heap_size: size,
        }
    }

    /// A buffer for one connection: registered if one is free, heap otherwise.
    pub fn take(&self) -> RecvBuf {
        let mem = match self.pool.as_ref().and_then(|p| p.try_next(self.size)) {
            Some(buf) => RecvMem::Fixed(buf),
            None => RecvMem::Heap(Vec::with_capacity(self.heap_size)),
        };
        RecvBuf { mem, len: 0 }
    }
}

impl Stream {
    fn new(socket: Socket) -> Stream {
        Stream {
            ready: OnceCell::new(),
            socket,
        }
    }

    fn raw_fd(&self) -> RawFd {
        match &self.socket {
            Socket::Tcp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }

    /// Waits until the socket has input (data, end of stream or an error) *without* a buffer,
    /// then takes one with `take` and receives into it: a connection that waits holds no
    /// receive buffer, only its registration with the reactor (tens of octets).
    ///
    /// A read that fills the whole buffer leaves the readiness set, as more is probably
    /// waiting (a message body); a shorter one has drained the socket and clears it. The
    /// reactor counts readiness events, so one that arrives meanwhile is not lost by the
    /// clearing. Should readiness be spurious, the read simply waits for data, buffer in hand.
    /// Without a registration (the reactor refused it), this is [`Stream::recv`].
    pub async fn recv_when_ready(
        &self,
        take: impl FnOnce() -> RecvBuf,
    ) -> (io::Result<usize>, RecvBuf) {
        let ready = self.ready.get_or_init(|| {
            // SAFETY: the descriptor is `self.socket`'s, open for as long as the socket is;
            // the registration lives in `self.ready`, dropped before `self.socket` (field
            // order), so it never outlives the descriptor nor sees its number reused.
            unsafe {
                AsyncFd::register_with_interest(Descriptor(self.raw_fd()), Interest::READABLE)
            }
            .inspect_err(|e| tracing::debug!(error = %e, "cannot register for readiness"))
            .ok()
        });
        let Some(ready) = ready else {
            return self.recv(take()).await;
        };
        let mut guard = match ready.readable().await {
            Ok(guard) => guard,
            Err(e) => return (Err(e), take()),
        };
        let buf = take();
        let capacity = buf.capacity();
        let (res, buf) = self.recv(buf).await;
        if matches!(res, Ok(n) if n > 0 && n < capacity) {
            guard.clear_ready();
        }
        (res, buf)
    }

    /// Connects to `addr` over TCP (the caller bounds the wait).
    pub async fn connect(addr: SocketAddr) -> io::Result<Stream> {
        let stream = tokio_uring::net::TcpStream::connect(addr).await?;
        // Commands are small and the server waits for them, as replies are on our listeners.
        let _ = stream.set_nodelay(true);
        Ok(Stream::new(Socket::Tcp(stream)))
    }

    /// Connects to the Unix stream socket at `path`.
    pub async fn connect_unix(path: &Path) -> io::Result<Stream> {
        let stream = tokio_uring::net::UnixStream::connect(path).await?;
        Ok(Stream::new(Socket::Unix(stream)))
    }

    /// Receives into `buf`, replacing what it held; `Ok(0)` is the peer's end of stream.
    pub async fn recv(&self, buf: RecvBuf) -> (io::Result<usize>, RecvBuf) {
        // Reads land at the start of the buffer; `len` says how much of it is this read's.
        let (res, mem) = match (&self.socket, buf.mem) {
            (Socket::Tcp(s), RecvMem::Fixed(b)) => {
                let (res, b) = s.read_fixed(b).await;
                (res, RecvMem::Fixed(b))
            }
            (Socket::Unix(s), RecvMem::Fixed(b)) => {
                let (res, b) = s.read_fixed(b).await;
                (res, RecvMem::Fixed(b))
            }
            (Socket::Tcp(s), RecvMem::Heap(mut v)) => {
                v.clear();
                let (res, v) = s.read(v).await;
                (res, RecvMem::Heap(v))
            }
            (Socket::Unix(s), RecvMem::Heap(mut v)) => {
                v.clear();
                let (res, v) = s.read(v).await;
                (res, RecvMem::Heap(v))
            }
        };
        let len = *res.as_ref().unwrap_or(&0);
        (res, RecvBuf { mem, len })
    }

    /// Sends all of `buf` and hands it back emptied.
    pub async fn send_all(&self, buf: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, mut buf) = match &self.socket {
            Socket::Tcp(s) => s.write_all(buf).await,
            Socket::Unix(s) => s.write_all(buf).await,
        };
        buf.clear();
        (res, buf)
    }

    /// Shuts down the write side, so the peer sees end of stream after the last reply.
    pub fn shutdown(&self) {
        self.shutdown_how(std::net::Shutdown::Write);
    }

    /// Shuts down both directions: a receive still in flight completes at once, so the socket
    /// is released now rather than when the peer next sends (a silent peer never would).
    pub fn abort(&self) {
        self.shutdown_how(std::net::Shutdown::Both);
    }

    fn shutdown_how(&self, how: std::net::Shutdown) {
        let _ = match &self.socket {
            Socket::Tcp(s) => s.shutdown(how),
            Socket::Unix(s) => s.shutdown(how),
        };
    }
}

/// A file on the ring, written at explicit offsets.
pub struct File(tokio_uring::fs::File);

impl File {
    /// Creates `path` with permission bits `mode` (less the umask), failing if it exists.
    pub async fn create_new(path: &Path, mode: u32) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        tokio_uring::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .await
            .map(File)
    }

    /// Creates `path` for reading and writing with permission bits `mode` (less the umask),
    /// failing if it exists.
    pub async fn create_rw(path: &Path, mode: u32) -> io::Result<File> {
        use std::os::unix::fs::OpenOptionsExt;
        tokio_uring::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(path)
            .await
            .map(File)
    }

    /// Allocates `len` octets from `offset` (`fallocate(2)` mode 0: the file grows to cover
    /// them, and later writes there need no allocation).
    pub async fn fallocate(&self, offset: u64, len: u64) -> io::Result<()> {
        self.0.fallocate(offset, len, 0).await
    }

    /// Opens `path` for reading.
    pub async fn open(path: &Path) -> io::Result<File> {
        tokio_uring::fs::File::open(path).await.map(File)
    }

    /// Reads into `buf` (up to its capacity, replacing what it held) from `offset`; hands it
    /// back holding what was read, empty at the end of the file.
    pub async fn read_at(&self, mut buf: Vec<u8>, offset: u64) -> (io::Result<usize>, Vec<u8>) {
        buf.clear();
        self.0.read_at(buf, offset).await
    }

    /// Opens a directory so that it can be synced.
    pub async fn open_dir(path: &Path) -> io::Result<File> {
        tokio_uring::fs::File::open(path).await.map(File)
    }

    /// Writes all of `buf` at `offset` and hands it back emptied.
    pub async fn write_all_at(&self, buf: Vec<u8>, offset: u64) -> (io::Result<()>, Vec<u8>) {
        let (res, slice) = self.0.write_all_at(buf.slice(..), offset).await;
        let mut buf = slice.into_inner();
        buf.clear();
        (res, buf)
    }

    /// `fdatasync`: the data and the metadata needed to read it back are on stable storage.
    pub async fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data().await
    }

    /// `fsync`: data and all metadata; for a directory, its entries.
    pub async fn sync_all(&self) -> io::Result<()> {
        self.0.sync_all().await
    }

    /// Closes the file, reporting the close error that a drop would hide.
    pub async fn close(self) -> io::Result<()> {
        self.0.close().await
    }
}

/// Renames `from` to `to` (atomically replacing `to`).
pub async fn rename(from: &Path, to: &Path) -> io::Result<()> {
    tokio_uring::fs::rename(from, to).await
}

/// Removes a file.
pub async fn remove_file(path: &Path) -> io::Result<()> {
    tokio_uring::fs::remove_file(path).await
}
