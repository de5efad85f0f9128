//! [`ControlServer`]: listens on `control.socket` on its own thread and answers one request per
//! connection.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::protocol::{BanEntry, Request, Response, MAX_LINE};
use crate::clock;
use crate::driver::Reloader;
use crate::guard::{ban_key, BanReason, Guard};
use crate::queue::{self, Answer, QueueHandle, QueueId};
use crate::shield::MAX_BAN_SECS;

/// How long a client may take to send its request, and to read the response: a client that
/// stalls holds up the next one, never the server.
const CLIENT_DEADLINE: Duration = Duration::from_secs(5);

/// Why the control socket could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another process answers on the socket: most likely a second server with the same
    /// configuration.
    #[error("control.socket: {}: another server answers there", .0.display())]
    InUse(PathBuf),
    /// Something other than a socket is in the way.
    #[error("control.socket: {}: exists and is not a socket", .0.display())]
    NotASocket(PathBuf),
    /// Binding, or setting the mode, failed.
    #[error("control.socket: {}: {source}", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
}

/// The listening control socket. Dropping it stops the thread and removes the socket file.
pub struct ControlServer {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for ControlServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ControlServer")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl ControlServer {
    /// Binds `path` (mode 0600; a stale socket left by a crash is replaced, a live one is an
    /// error) and answers requests against `guard`, `queue` and `reloader`; `ban_add` without
    /// `secs` bans for the guard's `shield.ban_secs`.
    pub fn start(
        path: &Path,
        guard: Arc<Guard>,
        queue: QueueHandle,
        reloader: Arc<Reloader>,
    ) -> Result<ControlServer, ControlError> {
        let io = |source| ControlError::Io {
            path: path.to_owned(),
            source,
        };
        match std::fs::symlink_metadata(path) {
            Ok(meta) if !meta.file_type().is_socket() => {
                return Err(ControlError::NotASocket(path.to_owned()))
            }
            Ok(_) => {
                if UnixStream::connect(path).is_ok() {
                    return Err(ControlError::InUse(path.to_owned()));
                }
                std::fs::remove_file(path).map_err(io)?;
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        }
        let listener = UnixListener::bind(path).map_err(io)?;
        // Between bind and chmod the socket has the umask's mode (usually 0755: connecting
        // needs write permission, so others still cannot).
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io)?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::Builder::new()
            .name("smtp-edge-control".into())
            .spawn(move || {
                for conn in listener.incoming() {
                    if stopping.load(Ordering::Acquire) {
                        return;
                    }
                    match conn {
                        Ok(conn) => serve(conn, &guard, &queue, &reloader),
                        Err(e) => tracing::warn!(error = %e, "control: accept failed"),
                    }
                }
            })
            .map_err(io)?;
        tracing::info!(path = %path.display(), "control socket ready");
        Ok(ControlServer {
            path: path.to_owned(),
            stop,
            thread: Some(thread),
        })
    }
}

impl Drop for ControlServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        // Wake the thread out of accept; it sees `stop` and returns.
        if UnixStream::connect(&self.path).is_ok() {
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Reads one request, answers it, closes.
fn serve(conn: UnixStream, guard: &Guard, queue: &QueueHandle, reloader: &Reloader) {
    let _ = conn.set_read_timeout(Some(CLIENT_DEADLINE));
    let _ = conn.set_write_timeout(Some(CLIENT_DEADLINE));
    let mut line = Vec::new();
    let read = BufReader::new(&conn)
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line);
    let response = match read {
        Ok(0) => return,
        Ok(_) => match serde_json::from_slice::<Request>(&line) {
            Ok(request) => handle(request, guard, queue, reloader),
            Err(e) => Response::Error {
                message: format!("bad request: {e}"),
            },
        },
        Err(e) => {
            tracing::debug!(error = %e, "control: cannot read a request");
            return;
        }
    };
    let mut out = serde_json::to_vec(&response).unwrap_or_default();
    out.push(b'\n');
    if let Err(e) = (&conn).write_all(&out) {
        tracing::debug!(error = %e, "control: cannot send a response");
    }
}

/// What each request does.
fn handle(request: Request, guard: &Guard, queue: &QueueHandle, reloader: &Reloader) -> Response {
    let now = clock::now();
    match request {
        Request::Reload {} => match reloader.reload() {
            Ok(done) => Response::Reloaded {
                restart_needed: done
                    .restart_needed
                    .iter()
                    .map(|k| (*k).to_owned())
                    .collect(),
            },
            Err(e) => Response::ReloadRefused {
                problems: e.problems(),
            },
        },
        Request::QueueList {} => answer(queue.request(queue::Request::List)),
        Request::QueueShow { id } => ask(queue, &id, queue::Request::Show),
        Request::QueueFlush { id: None } => answer(queue.request(queue::Request::Flush(None))),
        Request::QueueFlush { id: Some(id) } => {
            ask(queue, &id, |id| queue::Request::Flush(Some(id)))
        }
        Request::QueueDelete { id } => ask(queue, &id, queue::Request::Delete),
        Request::QueueBounce { id } => ask(queue, &id, queue::Request::Bounce),
        Request::BanList {} => Response::Bans {
            bans: guard
                .list(now)
                .into_iter()
                .map(|(source, left)| BanEntry {
                    source: source.to_string(),
                    secs: left.as_secs() + u64::from(left.subsec_nanos() > 0),
                })
                .collect(),
        },
        Request::BanAdd { addr, secs } => {
            let source = ban_key(addr).to_string();
            let secs = secs.unwrap_or(guard.default_ban().as_secs());
            if !(1..=MAX_BAN_SECS).contains(&secs) {
                return error(format!(
                    "secs must be 1..={MAX_BAN_SECS} (30 days), got {secs}"
                ));
            }
            if guard.is_trusted(addr) {
                return error(format!(
                    "{addr} is in guard.trusted, whose sources are never banned"
                ));
            }
            if guard.covers_balancer(addr) {
                return error(format!(
                    "a ban on {source} would cover a balancer in proxy.trusted, and with it \
                     every client behind it"
                ));
            }
            guard.ban_for(addr, now, BanReason::Operator, Duration::from_secs(secs));
            Response::Banned { source, secs }
        }
        Request::BanDel { addr } => {
            let source = ban_key(addr).to_string();
            match guard.unban(addr, now) {
                Ok(true) => {
                    tracing::info!(%source, "ban lifted by the operator");
                    Response::Unbanned { source }
                }
                Ok(false) => error(format!("{source} is not banned")),
                Err(e) => error(format!("{source}: {e}")),
            }
        }
    }
}

fn error(message: String) -> Response {
    Response::Error { message }
}

/// Asks the queue about the message `id` names, if it names one.
fn ask(queue: &QueueHandle, id: &str, request: impl FnOnce(QueueId) -> queue::Request) -> Response {
    match id.parse::<QueueId>() {
        Ok(id) => answer(queue.request(request(id))),
        Err(e) => error(format!("{id:?}: {e}")),
    }
}

fn answer(answer: Answer) -> Response {
    match answer {
        Answer::List(messages) => Response::Queue { messages },
        Answer::Show(message) => Response::Queue {
            messages: vec![message],
        },
        Answer::Done(messages) => Response::QueueDone { messages },
        Answer::Error(message) => Response::Error { message },
    }
}
