// The C side of TwillSystem: what Swift cannot import from Glibc (struct mmsghdr and
// recvmmsg/sendmmsg need _GNU_SOURCE; CMSG_* are macros; prctl and ioctl are variadic;
// strerrorname_np is a GNU extension) and relaxed single-writer counters. No logic lives here.
#ifndef TWILL_CTWILLSYSTEM_H
#define TWILL_CTWILLSYSTEM_H

#include <stdint.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <spawn.h>

/// Layout-identical to the kernel's struct mmsghdr (declared here so Swift sees it without
/// _GNU_SOURCE in the Glibc module).
struct twill_mmsghdr {
    struct msghdr msg_hdr;
    unsigned int msg_len;
};

/// recvmmsg(2); returns the count received or -1 with errno set.
int twill_recvmmsg(int fd, struct twill_mmsghdr *msgs, unsigned int count, int flags);
/// sendmmsg(2); returns the count sent or -1 with errno set.
int twill_sendmmsg(int fd, struct twill_mmsghdr *msgs, unsigned int count, int flags);
/// setns(2) into a network namespace (CLONE_NEWNET).
int twill_setns_net(int fd);
/// ioctl(fd, request, value) for requests that take an integer, not a pointer (TUNSETOFFLOAD).
int twill_ioctl_value(int fd, unsigned long request, unsigned long value);
/// eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC): the engine's stop wakeup.
int twill_eventfd(void);
/// posix_spawn_file_actions_addclosefrom_np: the child closes every descriptor from `from` on
/// (what it inherited without close-on-exec, too).
int twill_spawn_close_from(posix_spawn_file_actions_t *actions, int from);
/// memfd_create(name, MFD_CLOEXEC): an anonymous file in memory.
int twill_memfd(const char *name);
/// Names the calling thread (at most 15 bytes are kept), for ps/top.
void twill_set_thread_name(const char *name);

/// The errno's symbolic name ("ENOSPC"), or NULL when glibc does not know it.
const char *twill_errno_name(int value);
/// The calling thread's errno, and setting it (Swift's Glibc.errno is a computed property).
int twill_errno(void);

/// pipe2(fds, O_CLOEXEC) (a GNU extension in glibc's headers).
int twill_pipe_cloexec(int fds[2]);

/// CMSG_SPACE(len).
size_t twill_cmsg_space(size_t len);
/// Writes one cmsg (level, type, the `len` bytes at `data`) as the only control message of
/// `msg`, whose msg_control must have room for CMSG_SPACE(len); sets msg_controllen.
void twill_put_cmsg(struct msghdr *msg, int level, int type, const void *data, size_t len);
/// Finds the first cmsg of (level, type) in `msg` and copies up to `len` bytes of its data to
/// `out`; returns 1 if found, 0 if not.
int twill_get_cmsg(const struct msghdr *msg, int level, int type, void *out, size_t len);

/// Copies the descriptors of `msg`'s first SCM_RIGHTS message (at most `max`) to `fds`;
/// returns how many.
int twill_get_rights(const struct msghdr *msg, int *fds, int max);

/// counter += n for a counter with a single writing thread (relaxed; no lock prefix needed).
static inline void twill_counter_add(uint64_t *counter, uint64_t n) {
    __atomic_store_n(counter, __atomic_load_n(counter, __ATOMIC_RELAXED) + n, __ATOMIC_RELAXED);
}
/// A relaxed read of a counter written by another thread.
static inline uint64_t twill_counter_load(const uint64_t *counter) {
    return __atomic_load_n(counter, __ATOMIC_RELAXED);
}

#endif
