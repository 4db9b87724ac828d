#pragma once
/// coproc::is_process_shared_v: objects a forked child reaches through its
/// copy of the parent's handle.
///
/// A queue, a connection, a sync primitive, a shared value or a manager proxy
/// lives in shared memory or file descriptors that a child forked after its
/// creation inherits. coproc::process hands such an object to its child by
/// reference (pass it as an lvalue argument; the child's function takes it as
/// `T&`): the child's copy of the handle reaches the same shared object. It
/// never crosses by value (it is not codable) and is not a pool task argument.

namespace coproc {

/// True for the handle types of coproc's shared objects (each header
/// specialises it next to its class).
template <class T>
inline constexpr bool is_process_shared_v = false;

}  // namespace coproc
