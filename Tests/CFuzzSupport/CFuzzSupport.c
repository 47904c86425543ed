#include "CFuzzSupport.h"
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define MAX_INPUT (1 << 20)
static char input[MAX_INPUT];
static volatile size_t input_length;
static char target_name[64];
static char crash_directory[512];

static void on_crash(int sig) {
    char path[700];
    // snprintf is not async-signal-safe in theory; the process is dying anyway and this is a test.
    snprintf(path, sizeof path, "%s/crash-%s-%d.bin", crash_directory, target_name, (int)getpid());
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd >= 0) {
        size_t done = 0;
        while (done < input_length) {
            ssize_t n = write(fd, input + done, input_length - done);
            if (n <= 0) break;
            done += (size_t)n;
        }
        close(fd);
        const char msg[] = "fuzz: crashing input saved\n";
        (void)!write(2, msg, sizeof msg - 1);
    }
    signal(sig, SIG_DFL);
    raise(sig);
}

void twill_fuzz_install(const char *directory) {
    strncpy(crash_directory, directory, sizeof crash_directory - 1);
    int signals[] = {SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE, SIGABRT};
    for (size_t i = 0; i < sizeof signals / sizeof signals[0]; i++) signal(signals[i], on_crash);
}

void twill_fuzz_set_input(const char *target, const void *bytes, size_t length) {
    if (length > MAX_INPUT) length = MAX_INPUT;
    strncpy(target_name, target, sizeof target_name - 1);
    memcpy(input, bytes, length);
    input_length = length;
}
