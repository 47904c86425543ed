#ifndef TWILL_CNETLINK_SHIM_H
#define TWILL_CNETLINK_SHIM_H
// libmnl and the rtnetlink UAPI headers. The helpers below exist only because Swift cannot
// import function-like macros; no logic lives here (thread and namespace shims are CTwillSystem's).
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/genetlink.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/if_addr.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

/// MNL_SOCKET_BUFFER_SIZE is a macro.
static inline size_t twill_mnl_socket_buffer_size(void) { return (size_t)MNL_SOCKET_BUFFER_SIZE; }

/// MNL_ALIGN is a macro.
static inline size_t twill_mnl_align(size_t len) { return MNL_ALIGN(len); }
#endif
