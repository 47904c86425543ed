#define _GNU_SOURCE
#include "CTwillSystem.h"
#include <sched.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <spawn.h>
#include <errno.h>
#include <fcntl.h>
#include <unistd.h>

_Static_assert(sizeof(struct twill_mmsghdr) == sizeof(struct mmsghdr), "mmsghdr layout");

int twill_recvmmsg(int fd, struct twill_mmsghdr *msgs, unsigned int count, int flags) {
    return recvmmsg(fd, (struct mmsghdr *)msgs, count, flags, NULL);
}

int twill_sendmmsg(int fd, struct twill_mmsghdr *msgs, unsigned int count, int flags) {
    return sendmmsg(fd, (struct mmsghdr *)msgs, count, flags);
}

int twill_setns_net(int fd) { return setns(fd, CLONE_NEWNET); }

void twill_set_thread_name(const char *name) { prctl(PR_SET_NAME, (unsigned long)name, 0, 0, 0); }

size_t twill_cmsg_space(size_t len) { return CMSG_SPACE(len); }

void twill_put_cmsg(struct msghdr *msg, int level, int type, const void *data, size_t len) {
    msg->msg_controllen = CMSG_SPACE(len);
    struct cmsghdr *c = CMSG_FIRSTHDR(msg);
    c->cmsg_level = level;
    c->cmsg_type = type;
    c->cmsg_len = CMSG_LEN(len);
    memcpy(CMSG_DATA(c), data, len);
}

int twill_get_cmsg(const struct msghdr *msg, int level, int type, void *out, size_t len) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level == level && c->cmsg_type == type) {
            size_t have = c->cmsg_len - CMSG_LEN(0);
            memcpy(out, CMSG_DATA(c), have < len ? have : len);
            return 1;
        }
    }
    return 0;
}

int twill_get_rights(const struct msghdr *msg, int *fds, int max) {
    for (struct cmsghdr *c = CMSG_FIRSTHDR(msg); c != NULL; c = CMSG_NXTHDR((struct msghdr *)msg, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS) {
            int n = (int)((c->cmsg_len - CMSG_LEN(0)) / sizeof(int));
            if (n > max) n = max;
            memcpy(fds, CMSG_DATA(c), (size_t)n * sizeof(int));
            return n;
        }
    }
    return 0;
}

const char *twill_errno_name(int value) { return strerrorname_np(value); }

int twill_errno(void) { return errno; }

int twill_pipe_cloexec(int fds[2]) { return pipe2(fds, O_CLOEXEC); }

int twill_eventfd(void) { return eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC); }

int twill_memfd(const char *name) { return memfd_create(name, MFD_CLOEXEC); }

int twill_spawn_close_from(posix_spawn_file_actions_t *actions, int from) { return posix_spawn_file_actions_addclosefrom_np(actions, from); }

int twill_ioctl_value(int fd, unsigned long request, unsigned long value) { return ioctl(fd, request, value); }
