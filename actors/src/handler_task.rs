//! The life of one message's handler: a tokio task with a deadline.
//!
//! The handler future is polled once inline, on the connection's task, inside `catch_unwind`:
//! a handler that answers without waiting (most do: parse, decide, answer) costs no task spawn,
//! no wake-ups and no allocation (it is `Unpin`, so it is polled where it is and moved into a
//! task only if it is still pending). A handler that returns `Pending` is moved into its own
//! task. From there a panic is caught by
//! tokio (the [`JoinError`](tokio::task::JoinError) carries the payload), and a handler past its
//! deadline is aborted without touching the connection; the timeout is only reported once the
//! task has really ended (its future, and whatever it owned, dropped), so a failure response is
//! never sent while the handler may still be running.
//!
//! Handlers must not block: the first poll runs on the connection's task, later ones on a
//! runtime worker, as for any tokio task.

use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::pin::Pin;
use std::task::{Context, Poll, Waker, ready};
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Instant, Sleep};
use tokio_util::task::TaskTracker;

use crate::protocol::Failure;
use crate::util::{deadline, panic_message};

/// What a handler produced: its response (or none), or why it has none.
pub(crate) type HandlerResult<R> = Result<Option<R>, Failure>;

/// A handler, finished on its first poll or running in its own task. Dropping it aborts the
/// task.
pub(crate) enum HandlerTask<R> {
    /// Finished inline; taken by the first `poll`.
    Done(Option<HandlerResult<R>>),
    Running(Running<R>),
}

pub(crate) struct Running<R> {
    task: JoinHandle<Option<R>>,
    deadline: Pin<Box<Sleep>>,
    limit: Duration,
    timed_out: bool,
}

impl<R: Send + 'static> HandlerTask<R> {
    /// Makes the handler future with `make` (already instrumented with its span) and polls it
    /// once here; spawns it on the server's tracker if it is not done. A panic while making it
    /// (a handler that does its work before returning its future) is the handler's failure like
    /// a panic in its first poll: both run under one `catch_unwind`.
    pub(crate) fn start<F>(tasks: &TaskTracker, make: impl FnOnce() -> F, limit: Duration) -> Self
    where
        F: Future<Output = Option<R>> + Unpin + Send + 'static,
    {
        let mut cx = Context::from_waker(Waker::noop());
        let first = catch_unwind(AssertUnwindSafe(|| {
            let mut handler = make();
            let poll = Pin::new(&mut handler).poll(&mut cx);
            (handler, poll)
        }));
        match first {
            Ok((_, Poll::Ready(response))) => HandlerTask::Done(Some(Ok(response))),
            Err(payload) => HandlerTask::Done(Some(Err(Failure::Panicked(panic_message(payload))))),
            // The spawned task polls it again at once, with a real waker: a future registers
            // its waker anew on every poll, so the no-op one of the first poll is never needed.
            Ok((handler, Poll::Pending)) => HandlerTask::Running(Running {
                task: tasks.spawn(handler),
                deadline: Box::pin(tokio::time::sleep_until(deadline(Instant::now(), limit))),
                limit,
                timed_out: false,
            }),
        }
    }
}

impl<R> HandlerTask<R> {
    /// The result of a handler that finished on its first poll, taken; `None` if it is running
    /// in its own task (or was already taken).
    pub(crate) fn take_done(&mut self) -> Option<HandlerResult<R>> {
        match self {
            HandlerTask::Done(result) => result.take(),
            HandlerTask::Running(_) => None,
        }
    }
}

// The response is never pinned: it only moves out of a finished handler.
impl<R> Unpin for HandlerTask<R> {}

impl<R> Future for HandlerTask<R> {
    type Output = HandlerResult<R>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.get_mut() {
            HandlerTask::Done(result) => {
                Poll::Ready(result.take().expect("a handler result is taken once"))
            }
            HandlerTask::Running(running) => running.poll(cx),
        }
    }
}

impl<R> Running<R> {
    fn poll(&mut self, cx: &mut Context<'_>) -> Poll<HandlerResult<R>> {
        loop {
            if let Poll::Ready(joined) = Pin::new(&mut self.task).poll(cx) {
                return Poll::Ready(match joined {
                    // Past the deadline the result is a timeout, even if the task managed to
                    // finish between the abort and this poll: the deadline was already reported.
                    _ if self.timed_out => Err(Failure::TimedOut(self.limit)),
                    Ok(response) => Ok(response),
                    Err(error) if error.is_panic() => {
                        Err(Failure::Panicked(panic_message(error.into_panic())))
                    }
                    // Cancelled by someone else: only the runtime shutting down does that.
                    Err(_) => Err(Failure::Aborted),
                });
            }
            if self.timed_out {
                // Aborted; the join handle wakes us once the task has really ended.
                return Poll::Pending;
            }
            ready!(self.deadline.as_mut().poll(cx));
            self.task.abort();
            self.timed_out = true;
        }
    }
}

impl<R> Drop for Running<R> {
    fn drop(&mut self) {
        // Dropping a JoinHandle only detaches the task; a connection that goes away takes its
        // handlers with it.
        self.task.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    struct SetOnDrop(Arc<AtomicBool>);
    impl Drop for SetOnDrop {
        fn drop(&mut self) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    /// A handler that finishes in time yields its response.
    #[tokio::test(start_paused = true)]
    async fn finished_handler_yields_response() {
        let tasks = TaskTracker::new();
        let task = HandlerTask::start(
            &tasks,
            || Box::pin(async { Some(7) }),
            Duration::from_secs(1),
        );
        assert_eq!(task.await, Ok(Some(7)));
    }

    /// A handler past its deadline is a timeout, and its future is dropped before that is
    /// reported.
    #[tokio::test(start_paused = true)]
    async fn stuck_handler_times_out_and_is_dropped_first() {
        let tasks = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&dropped));
        let task = HandlerTask::start(
            &tasks,
            || {
                Box::pin(async move {
                    let _guard = guard;
                    std::future::pending::<Option<u8>>().await
                })
            },
            Duration::from_secs(1),
        );
        assert_eq!(task.await, Err(Failure::TimedOut(Duration::from_secs(1))));
        assert!(dropped.load(Ordering::SeqCst));
    }

    /// A panicking handler is a failure carrying the panic's text.
    #[tokio::test]
    async fn panicking_handler_reports_message() {
        let tasks = TaskTracker::new();
        let task = HandlerTask::<u8>::start(
            &tasks,
            || Box::pin(async { panic!("boom {}", 1) }),
            Duration::from_secs(1),
        );
        assert_eq!(task.await, Err(Failure::Panicked("boom 1".into())));
        let task = HandlerTask::<u8>::start(
            &tasks,
            || Box::pin(async { panic!("static") }),
            Duration::MAX,
        );
        assert_eq!(task.await, Err(Failure::Panicked("static".into())));
    }

    /// A handler that panics after waiting (in its own task) is reported the same way.
    #[tokio::test]
    async fn panic_after_await_reports_message() {
        let tasks = TaskTracker::new();
        let task = HandlerTask::<u8>::start(
            &tasks,
            || {
                Box::pin(async {
                    tokio::task::yield_now().await;
                    panic!("later")
                })
            },
            Duration::from_secs(1),
        );
        assert!(matches!(task, HandlerTask::Running(_)));
        assert_eq!(task.await, Err(Failure::Panicked("later".into())));
    }

    /// Dropping a running handler aborts its task.
    #[tokio::test]
    async fn dropping_handler_aborts_task() {
        let tasks = TaskTracker::new();
        let dropped = Arc::new(AtomicBool::new(false));
        let guard = SetOnDrop(Arc::clone(&dropped));
        let task = HandlerTask::start(
            &tasks,
            || {
                Box::pin(async move {
                    let _guard = guard;
                    std::future::pending::<Option<u8>>().await
                })
            },
            Duration::from_secs(60),
        );
        drop(task);
        tasks.close();
        tasks.wait().await;
        assert!(dropped.load(Ordering::SeqCst));
    }
}
