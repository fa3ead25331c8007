//! The state of an actor whose work runs in one task it owns.

use tokio::task::JoinHandle;

/// Holds an actor's arguments until `post_start` spawns its task, then the task itself.
///
/// `post_stop` does not run when an actor is killed or fails; `Drop` does, on every path. So the
/// task (and everything it holds: a socket, a listener, handler tasks) ends with the actor.
pub(crate) struct OwnedTask<A> {
    args: Option<A>,
    task: Option<JoinHandle<()>>,
}

impl<A> OwnedTask<A> {
    /// State for an actor not started yet.
    pub(crate) fn new(args: A) -> Self {
        Self {
            args: Some(args),
            task: None,
        }
    }

    /// Spawns the task from the arguments, once; later calls do nothing.
    pub(crate) fn start(&mut self, spawn: impl FnOnce(A) -> JoinHandle<()>) {
        if let Some(args) = self.args.take() {
            self.task = Some(spawn(args));
        }
    }
}

impl<A> Drop for OwnedTask<A> {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
