/* SPDX-License-Identifier: MIT */
/*
 * simvm-dirty.h - vcma-simvm's dirty log of guest RAM: which tracked gfns were written
 * since they were tracked or last read (the VMM channel's DIRTY_LOG feature, PROTOCOL.md
 * §9.1). Guest RAM is one range of MAP_SHARED mappings, gfn g at base + g * 4096.
 *
 * Ownership and locking: one thread (the VMM thread) calls everything after dlog_open;
 * the vCPUs only write guest RAM, and the kernel logs those writes.
 */
#ifndef SIMVM_DIRTY_H
#define SIMVM_DIRTY_H

#include <stddef.h>
#include <stdint.h>

struct dlog;

/* 0 if this kernel can log writes to shared memory (checked on a scratch memfd mapping,
 * end to end); else -errno and `why` names what is missing, in one phrase. */
int dlog_probe(char *why, size_t len);

/* Log writes to [base, base + frames pages): register the range (already mapped,
 * MAP_SHARED) with a userfaultfd in async write-protect mode. Nothing is tracked yet.
 * 0 or -errno with `why` set. */
int dlog_open(struct dlog **out, void *base, uint64_t frames, char *why, size_t len);
void dlog_close(struct dlog *d);

/* Track gfns [gfn, gfn + count): they are clean now and every later write is logged.
 * -EINVAL outside the range, -errno from the kernel (then some may be tracked). */
int dlog_track(struct dlog *d, uint64_t gfn, uint64_t count);
/* Stop tracking them (and stop write-protecting them); 0 or -errno. */
int dlog_untrack(struct dlog *d, uint64_t gfn, uint64_t count);
/*
 * The mapping of [gfn, gfn + count) was replaced (mmap MAP_FIXED): register the new
 * mapping. Tracked gfns in it stay tracked and read as written until the next read (the
 * new mapping has no write-protection to tell clean from written: safe). 0 or -errno;
 * on failure the log is broken and every later track and read fails with that errno.
 */
int dlog_reregister(struct dlog *d, uint64_t gfn, uint64_t count);

/*
 * Read and clear: call emit(ctx, gfn, count) for the tracked gfns written since their
 * track or the previous read, as sorted, disjoint, maximal runs; each is clean again
 * (and still tracked). Returns the pages reported, or -errno (the kernel's, or emit's
 * negative return, which stops the read); after an error some written gfns may have
 * been cleared without being emitted, so the caller must count every tracked gfn as
 * written (as the host does for a DIRTY with an errno).
 */
typedef int (*dlog_emit_fn)(void *ctx, uint64_t gfn, uint64_t count);
int64_t dlog_read(struct dlog *d, dlog_emit_fn emit, void *ctx);

uint64_t dlog_ntracked(const struct dlog *d);
int dlog_is_tracked(const struct dlog *d, uint64_t gfn);

#endif
