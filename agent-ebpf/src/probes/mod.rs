//! One module per hooked event; `agent/src/probes/` attaches them by the same names.

pub mod accept;
pub mod block;
pub mod close;
pub mod process;
pub mod receive;
pub mod sched;
pub mod sync;
pub mod tcp;
pub mod write;

/// Defines the `sys_enter_<name>` / `sys_exit_<name>` tracepoint pair of one op.
///
/// `$req` computes the bytes recorded at enter from the context (0 for most ops); it runs only
/// for tracked processes, after the filter.
macro_rules! syscall_pair {
    ($enter:ident, $exit:ident, $op:expr, |$ctx:ident| $req:expr) => {
        #[aya_ebpf::macros::tracepoint]
        pub fn $enter($ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            if !crate::syscall::current_is_tracked() {
                return 0;
            }
            let req = $req;
            crate::syscall::enter(&$ctx, $op, req)
        }

        #[aya_ebpf::macros::tracepoint]
        pub fn $exit(ctx: aya_ebpf::programs::TracePointContext) -> u32 {
            crate::syscall::exit(&ctx, $op)
        }
    };
}
pub(crate) use syscall_pair;
