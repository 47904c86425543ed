#ifndef TWILL_CNETLINK_SHIM_H
#define TWILL_CNETLINK_SHIM_H
// libmnl and the rtnetlink UAPI headers. The helpers below exist only because Swift cannot
// import function-like macros or call variadic C functions; no logic lives here.
#include <libmnl/libmnl.h>
#include <linux/netlink.h>
#include <linux/rtnetlink.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/if_addr.h>
#include <linux/sched.h>
#include <net/if.h>
#include <sys/syscall.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <unistd.h>

/// setns(fd, CLONE_NEWNET) for the calling thread (glibc declares setns only under _GNU_SOURCE).
static inline int twill_setns_net(int fd) { return (int)syscall(__NR_setns, fd, CLONE_NEWNET); }

/// prctl is variadic: names the calling thread (at most 15 bytes are kept).
static inline void twill_set_thread_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

/// MNL_SOCKET_BUFFER_SIZE is a macro.
static inline size_t twill_mnl_socket_buffer_size(void) { return (size_t)MNL_SOCKET_BUFFER_SIZE; }

/// MNL_ALIGN is a macro.
static inline size_t twill_mnl_align(size_t len) { return MNL_ALIGN(len); }
#endif
