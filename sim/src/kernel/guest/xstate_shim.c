/*
 * LD_PRELOAD shim for linux.uml (Debian's user-mode-linux 6.1) on hosts whose CPUs have
 * large XSAVE areas (AVX-512 + AMX): UML 6.1 asks ptrace for the NT_X86_XSTATE regset with
 * its own fixed buffer size, and newer host kernels refuse PTRACE_SETREGSET unless the
 * whole XSAVE area is given (EFAULT: "userspace - ptrace set fp regs failed, errno = 14",
 * then a kernel panic as the first process starts). This shim reads the whole area into a
 * big buffer, lets UML see/modify its prefix, and writes the whole area back. Every other
 * ptrace request goes straight to the system call. Used by sim/src/kernel/guest/boot.rs.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <string.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <unistd.h>

#define NT_X86_XSTATE 0x202

static _Alignas(64) char whole[65536];

static long raw_ptrace(long request, long pid, void *addr, void *data)
{
    return syscall(SYS_ptrace, request, pid, addr, data);
}

long ptrace(enum __ptrace_request request, ...)
{
    va_list ap;
    va_start(ap, request);
    pid_t pid = va_arg(ap, pid_t);
    void *addr = va_arg(ap, void *);
    void *data = va_arg(ap, void *);
    va_end(ap);
    if ((request == PTRACE_GETREGSET || request == PTRACE_SETREGSET) &&
        (long)addr == NT_X86_XSTATE) {
        struct iovec *theirs = data;
        struct iovec full = { whole, sizeof whole };
        long r = raw_ptrace(PTRACE_GETREGSET, pid, addr, &full);
        if (r < 0)
            return r;
        size_t n = theirs->iov_len < full.iov_len ? theirs->iov_len : full.iov_len;
        if (request == PTRACE_GETREGSET) {
            memcpy(theirs->iov_base, whole, n);
            theirs->iov_len = n;
            return 0;
        }
        memcpy(whole, theirs->iov_base, n);
        return raw_ptrace(PTRACE_SETREGSET, pid, addr, &full);
    }
    if (request == PTRACE_PEEKTEXT || request == PTRACE_PEEKDATA || request == PTRACE_PEEKUSER) {
        long value;
        long r = raw_ptrace(request, pid, addr, &value);
        return r < 0 ? r : value;
    }
    return raw_ptrace(request, pid, addr, data);
}
