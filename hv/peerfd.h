/* SPDX-License-Identifier: MIT */
/*
 * peerfd.h - eventfds that vcmad shares with a peer (a guest, a QEMU, a VMM).
 *
 * A peer that receives an fd over SCM_RIGHTS shares vcmad's open file description,
 * so it can clear O_NONBLOCK (fcntl F_SETFL) behind vcmad's back, hold the counter
 * at its maximum, or consume a kick before vcmad reads it. Nothing here may then
 * block the daemon's one thread:
 *   - reads use preadv2(RWF_NOWAIT), which fails with EAGAIN whatever the file's
 *     flags (eventfd has read_iter and FMODE_NOWAIT since Linux 5.12);
 *   - writes cannot ask for that (eventfd has no write_iter), so they run under a
 *     watchdog: a per-thread timer whose signal interrupts the write if it sleeps.
 *     A write sleeps only when the counter is full *and* O_NONBLOCK was cleared:
 *     the peer did both, on purpose. The timer is not set and cleared per write:
 *     it starts at the first write and stops at its first signal that finds no
 *     write in progress (at most one signal per VCMAD_PEERFD_WATCHDOG_MS while
 *     vcmad writes irqs; the calling thread must take EINTR from its other calls).
 * Kernels without RWF_NOWAIT for eventfd reads fall back to the watchdog too.
 */
#ifndef VCMA_HV_PEERFD_H
#define VCMA_HV_PEERFD_H

#include <stdint.h>

#define VCMAD_PEERFD_WATCHDOG_MS 10 /* how long a peer fd op may sleep before it is cut short */

/* Set up the calling thread's watchdog; call once per thread that touches peer fds. */
int vcmad_peerfd_init(void);
void vcmad_peerfd_fini(void);

/*
 * Add 1 to a peer's eventfd (an irq). 0 when written, or when the counter is full
 * and the fd non-blocking (the peer has an irq pending: all an irq means). -EPERM
 * when the write would have slept (the peer made the fd blocking and filled it):
 * the caller cuts the peer off. Other -errno as write(2).
 */
int vcmad_peerfd_signal(int fd);

/*
 * Read and clear a peer's eventfd (a kick): 0 with *count = the value read, or 0
 * with *count = 0 when there was nothing to read (the peer consumed it first). -EPERM
 * when a read fell back to the watchdog and slept; other -errno as read(2).
 */
int vcmad_peerfd_drain(int fd, uint64_t *count);

/* Read through the watchdog too, as on kernels without RWF_NOWAIT for eventfds
 * (vcmad switches by itself when the kernel says so; tests call this). */
void vcmad_peerfd_use_watchdog_reads(void);

#endif
