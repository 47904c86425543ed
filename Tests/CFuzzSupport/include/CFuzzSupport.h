// Test-only: keeps the fuzz input being tried, and writes it to a file if the process dies on
// a trap or a fault while trying it, so that every crash becomes a regression case.
#ifndef TWILL_CFUZZSUPPORT_H
#define TWILL_CFUZZSUPPORT_H
#include <stddef.h>

/// Installs handlers for SIGILL, SIGTRAP, SIGSEGV, SIGBUS, SIGFPE and SIGABRT that write the
/// current input to `directory`/crash-<target>-<pid>.bin and then die as they would have.
void twill_fuzz_install(const char *directory);
/// The input about to be tried (copied; at most 1 MiB is kept).
void twill_fuzz_set_input(const char *target, const void *bytes, size_t length);
#endif
